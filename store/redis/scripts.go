package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts below run atomically on the node that owns the AOR's hash
// slot. The keys they declare (KEYS) must share a slot or Redis refuses the
// call with CROSSSLOT. Besides those, they touch other bindings of the same
// AOR, whose names they build from the AOR's binding-key prefix: those keys
// carry the same {hash tag}, hence the same slot, so they are local to the
// node running the script (the tests check the slots with CLUSTER KEYSLOT;
// Redis itself only fails such an access when the slot is not local).
// Scores and "now" are unix milliseconds; a member is live while its score
// is greater than now.
//
// The write scripts come in two variants sharing one body:
//
//   - the Cluster variant (putScript, deleteScript, deleteAORScript) touches
//     the AOR's slot only; the caller then updates the token index (keys in
//     other slots) and publishes the events, in further round trips;
//   - the one-trip variant (putOneScript, deleteOneScript,
//     deleteAOROneScript), used with a single server or a Sentinel-managed
//     primary, where every key lives on one server, also writes or unlinks
//     the token keys and publishes the events itself, so each write is one
//     round trip. It declares b's token key in KEYS; the token keys it finds
//     in stored bindings (a replaced or deleted binding's token) it builds
//     from the token-key prefix, which only a non-Cluster server allows.
//
// Event payloads are built by the caller (json.Marshal of store.Event);
// for an instance only the script knows (a binding dropped for its token,
// a binding removed with its AOR) the caller passes the JSON before and
// after the instance and the script inserts cjson.encode(instance). The
// subscriber decodes both alike (bytes that are not UTF-8 become U+FFFD,
// as with json.Marshal).

// putScript stores one binding.
//
//	KEYS[1] AOR set            KEYS[2] binding key
//	ARGV    now, expiry, max, instance, token, data, aor, binding-key prefix
//
// It prunes expired members, refuses a new instance beyond max (counting the
// bindings left after dropping those with the same token), drops other
// bindings with the same token, replaces the binding and sets expiries.
// Reply: {"too_many"} or {"ok", prev data|nil, prev token|nil, {dropped
// instance...}}.
var putScript = goredis.NewScript(putBody + `
return {'ok', prev, prevtok, dropped}
`)

// putOneScript is putScript plus the token index and the events.
//
//	KEYS[1] AOR set            KEYS[2] binding key    KEYS[3] token key (when token ~= '')
//	ARGV[1..8]  as putScript
//	ARGV[9]  token-key prefix  ARGV[10] "1" to point the token key at the binding
//	ARGV[11] events channel    ARGV[12] the put event
//	ARGV[13], ARGV[14] a deleted event's JSON before and after the instance
//
// After putScript's work it sets the token key (PXAT the binding's expiry)
// when asked, unlinks the replaced binding's other token while it still
// points at this binding, and publishes a deleted event per dropped
// binding, then the put event. The reply is putScript's.
var putOneScript = goredis.NewScript(putBody + `
if tok ~= '' and ARGV[10] == '1' then
  redis.call('SET', KEYS[3], bkey, 'PXAT', exp)
end
if prevtok and prevtok ~= '' and prevtok ~= tok then
  local pk = ARGV[9] .. prevtok
  if redis.call('GET', pk) == bkey then
    redis.call('DEL', pk)
  end
end
for _, m in ipairs(dropped) do
  redis.call('PUBLISH', ARGV[11], ARGV[13] .. cjson.encode(m) .. ARGV[14])
end
redis.call('PUBLISH', ARGV[11], ARGV[12])
return {'ok', prev, prevtok, dropped}
`)

// putBody is the part putScript and putOneScript share: everything but the
// final reply.
const putBody = `
local zkey, bkey = KEYS[1], KEYS[2]
local now, exp, max = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local inst, tok, data, aor, bprefix = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]

redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
local prev, prevtok = false, false
local others, dropped = 0, {}
for _, m in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
  local f = redis.call('HMGET', bprefix .. m, 'data', 'token')
  if not f[1] then
    redis.call('ZREM', zkey, m)
  elseif m == inst then
    prev, prevtok = f[1], f[2]
  elseif tok ~= '' and f[2] == tok then
    dropped[#dropped + 1] = m
  else
    others = others + 1
  end
end
if not prev and max > 0 and others + 1 > max then
  return {'too_many'}
end
for _, m in ipairs(dropped) do
  redis.call('DEL', bprefix .. m)
  redis.call('ZREM', zkey, m)
end
redis.call('DEL', bkey)
redis.call('HSET', bkey, 'data', data, 'token', tok, 'aor', aor, 'instance', inst)
redis.call('PEXPIREAT', bkey, exp)
redis.call('ZADD', zkey, exp, inst)
local last = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', zkey, last[2])
end
`

// deleteScript removes one binding.
//
//	KEYS[1] AOR set            KEYS[2] binding key
//	ARGV    now, instance
//
// Reply: {token} when a live binding was removed, nil otherwise (an expired
// leftover is removed too).
var deleteScript = goredis.NewScript(deleteBody + `
return {f[2] or ''}
`)

// deleteOneScript is deleteScript plus the token index and the event.
//
//	KEYS, ARGV[1..2] as deleteScript
//	ARGV[3] token-key prefix   ARGV[4] events channel   ARGV[5] the event
//
// When it removed a live binding it unlinks the binding's token key while
// that still points at the binding, and publishes the event. The reply is
// deleteScript's.
var deleteOneScript = goredis.NewScript(deleteBody + `
local tok = f[2] or ''
if tok ~= '' then
  local tk = ARGV[3] .. tok
  if redis.call('GET', tk) == KEYS[2] then
    redis.call('DEL', tk)
  end
end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {tok}
`)

// deleteBody removes the binding and returns false unless it was live.
const deleteBody = `
local f = redis.call('HMGET', KEYS[2], 'data', 'token')
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
if not f[1] or not score or tonumber(score) <= tonumber(ARGV[1]) then
  return false
end
`

// deleteAORScript removes every binding of an AOR.
//
//	KEYS[1] AOR set
//	ARGV    now, binding-key prefix
//
// Reply: {instance, token, ...} of the live bindings removed.
var deleteAORScript = goredis.NewScript(deleteAORBody + `
return out
`)

// deleteAOROneScript is deleteAORScript plus the token index and the events.
//
//	KEYS, ARGV[1..2] as deleteAORScript
//	ARGV[3] token-key prefix   ARGV[4] events channel
//	ARGV[5], ARGV[6] a deleted event's JSON before and after the instance
//
// For each live binding removed, in order, it unlinks the binding's token
// key while that still points at the binding and publishes a deleted
// event. The reply is deleteAORScript's.
var deleteAOROneScript = goredis.NewScript(deleteAORBody + `
for i = 1, #out, 2 do
  local tok = out[i + 1]
  if tok ~= '' then
    local tk = ARGV[3] .. tok
    if redis.call('GET', tk) == ARGV[2] .. out[i] then
      redis.call('DEL', tk)
    end
  end
  redis.call('PUBLISH', ARGV[4], ARGV[5] .. cjson.encode(out[i]) .. ARGV[6])
end
return out
`)

// deleteAORBody removes the AOR's bindings and collects the live ones in out.
const deleteAORBody = `
local out = {}
local ms = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #ms, 2 do
  local k = ARGV[2] .. ms[i]
  local f = redis.call('HMGET', k, 'data', 'token')
  redis.call('DEL', k)
  if f[1] and tonumber(ms[i + 1]) > tonumber(ARGV[1]) then
    out[#out + 1] = ms[i]
    out[#out + 1] = f[2] or ''
  end
end
redis.call('DEL', KEYS[1])
`

// bindingsScript reads the live bindings of an AOR in one consistent step
// and prunes expired members.
//
//	KEYS[1] AOR set
//	ARGV    now, binding-key prefix
//
// Reply: {instance, data, ...}.
var bindingsScript = goredis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local d = redis.call('HGET', ARGV[2] .. m, 'data')
  if d then
    out[#out + 1] = m
    out[#out + 1] = d
  end
end
return out
`)

// unlinkTokenScript deletes a token index entry only while it still points
// at the given binding key (another binding may have taken the token).
//
//	KEYS[1] token key
//	ARGV    binding key
var unlinkTokenScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// clearPushScript replaces a binding's data only while it is still the
// data the caller read (compare-and-set): ClearPush reads the binding,
// drops its push target in Go and writes it back through this script, so
// a REGISTER stored in between is never overwritten. The binding's expiry,
// token and AOR set do not change.
//
//	KEYS[1] binding key
//	ARGV    data read, new data[, events channel, the put event]
//
// With the last two arguments (single server or Sentinel) it also
// publishes the event. Reply: 1 when it wrote, 0 when the data changed.
var clearPushScript = goredis.NewScript(`
if redis.call('HGET', KEYS[1], 'data') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'data', ARGV[2])
if ARGV[3] then
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 1
`)

// The held-call scripts below declare the index and the record, which
// share the {held} hash tag; listHeldScript builds record keys from the
// record prefix, which carries the same tag. A record is kept while its
// index score (forget time, unix ms) is greater than now.

// putHeldScript inserts or replaces a held call.
//
//	KEYS[1] held index         KEYS[2] record key
//	ARGV    now, forget time, id, aor, node, data
//
// A call already forgotten at now is removed rather than stored. The
// index expires with its last member. Reply: 1 when stored, 0 otherwise.
var putHeldScript = goredis.NewScript(`
local now, forget = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('DEL', KEYS[2])
if forget <= now then
  redis.call('ZREM', KEYS[1], ARGV[3])
  return 0
end
redis.call('HSET', KEYS[2], 'data', ARGV[6], 'aor', ARGV[4], 'node', ARGV[5])
redis.call('PEXPIREAT', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('PEXPIREAT', KEYS[1], last[2])
end
return 1
`)

// deleteHeldScript removes a held call.
//
//	KEYS[1] held index         KEYS[2] record key
//	ARGV    now, id
//
// Reply: 1 when a kept call was removed, 0 otherwise (a forgotten leftover
// is removed too).
var deleteHeldScript = goredis.NewScript(`
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
local n = redis.call('DEL', KEYS[2])
if n == 0 or not score or tonumber(score) <= tonumber(ARGV[1]) then
  return 0
end
return 1
`)

// listHeldScript prunes the index and reads the kept held calls that match
// the filter, in one consistent step.
//
//	KEYS[1] held index
//	ARGV    now, record prefix, aor ('' = any), node ('' = any)
//
// Reply: {id, aor, node, data, ...}.
var listHeldScript = goredis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[2] .. id, 'data', 'aor', 'node')
  if f[1] and (ARGV[3] == '' or f[2] == ARGV[3]) and (ARGV[4] == '' or f[3] == ARGV[4]) then
    out[#out + 1] = id
    out[#out + 1] = f[2] or ''
    out[#out + 1] = f[3] or ''
    out[#out + 1] = f[1]
  end
end
return out
`)

// claimHeldScript moves a held call from one node to another when its
// owner is still the first (compare-and-set on the record's node field).
//
//	KEYS[1] held index         KEYS[2] record key
//	ARGV    now, id, from, to
//
// Reply: {"absent"}, {"conflict", owner} or {"ok", data, aor}.
var claimHeldScript = goredis.NewScript(`
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
local f = redis.call('HMGET', KEYS[2], 'data', 'aor', 'node')
if not f[1] or not score or tonumber(score) <= tonumber(ARGV[1]) then
  return {'absent'}
end
if (f[3] or '') ~= ARGV[3] then
  return {'conflict', f[3] or ''}
end
redis.call('HSET', KEYS[2], 'node', ARGV[4])
return {'ok', f[1], f[2] or ''}
`)
