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
// Reply: {"too_many"} or {"ok", 1 when a live binding of the instance was
// replaced else 0, prev token|nil, {dropped instance...}}.
var putScript = goredis.NewScript(putBody + `
return {'ok', prev and 1 or 0, prevtok, dropped}
`)

// putOneScript is putScript plus the token index and the events.
//
//	KEYS[1] AOR set            KEYS[2] binding key    KEYS[3] token key (when token ~= '')
//	ARGV[1..8]  as putScript
//	ARGV[9]  token-key prefix  ARGV[10] "1" to point the token key at the binding
//	ARGV[11] events channel    ARGV[12] the put event
//	ARGV[13], ARGV[14] a deleted event's JSON before and after the instance
//	ARGV[15] the AOR's message index  ARGV[16] the put event with no_messages
//
// After putScript's work it sets the token key (PXAT the binding's expiry)
// when asked, unlinks the replaced binding's other token while it still
// points at this binding, and publishes a deleted event per dropped
// binding, then the put event: ARGV[16] when the AOR has no stored message
// (Redis drops an index with its last member), so that no subscriber
// spends a round trip looking for one on every registration; the index,
// like the token keys, is named from a prefix, which only a non-Cluster
// server allows. The reply is putScript's.
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
if redis.call('EXISTS', ARGV[15]) == 0 then
  redis.call('PUBLISH', ARGV[11], ARGV[16])
else
  redis.call('PUBLISH', ARGV[11], ARGV[12])
end
return {'ok', prev and 1 or 0, prevtok, dropped}
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
local function row(out, m, d)
  out[#out + 1] = m
  out[#out + 1] = d
end
` + eachLiveBinding)

// countBindingsScript reads the push provider of each live binding of an
// AOR, pruning expired members as bindingsScript does.
//
//	KEYS[1] AOR set
//	ARGV    now, binding-key prefix
//
// Reply: {provider, ...}, the empty string for a binding without a push
// target. The provider is read from the binding's JSON, where json.Marshal
// writes the push target's provider first: '"push":{"provider":"'. A
// string field cannot fake it, its quotes being escaped.
var countBindingsScript = goredis.NewScript(`
local function row(out, m, d)
  out[#out + 1] = string.match(d, '"push":{"provider":"([^"]*)"') or ''
end
` + eachLiveBinding)

// eachLiveBinding is what bindingsScript and countBindingsScript share:
// it prunes the expired members of the AOR set KEYS[1] (ARGV[1] now,
// ARGV[2] the binding-key prefix) and returns what the script's
// row(out, instance, data) added for each binding still stored.
const eachLiveBinding = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local out = {}
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local d = redis.call('HGET', ARGV[2] .. m, 'data')
  if d then
    row(out, m, d)
  end
end
return out
`

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

// The stored-message scripts below declare the message hash and the
// indexes, which all share the {msg} hash tag; they build the per-AOR
// index's name (and listMessagesScript the message keys) from prefixes that
// carry the same tag, so every key they touch is in one slot. A message's
// hash holds:
//
//	aor, sender      raw bytes
//	data             JSON of Received, Expires and Request (messageData)
//	exp              Expires, unix ms (what expiry is compared with)
//	attempts         delivery attempts
//	put              the nonce of the PutMessage call that created it
//	seq              the last order number given to an instance
//	npending         how many p: fields there are
//	p:<instance>     a pending device; the value is its order number
//	d:<instance>     a delivered device; the value is its order number
//
// Fixed field names never start with "p:" or "d:", so no instance can
// collide with them. A message has no expiry: it stays until the last
// acknowledgement or DeleteMessage (the caller's sweeper) removes it.

// putMessageScript stores a message unless its ID is taken.
//
//	KEYS[1] message hash   KEYS[2] arrival index   KEYS[3] expiry index
//	KEYS[4] the AOR's index
//	ARGV[1] id  ARGV[2] aor  ARGV[3] sender  ARGV[4] data
//	ARGV[5] Received (unix ms)  ARGV[6] Expires (unix ms)  ARGV[7] attempts
//	ARGV[8] the call's nonce    ARGV[9] P, the number of pending instances
//	ARGV[10 .. 9+P] pending instances, then delivered instances
//
// Reply: 1 when stored, also when the stored message carries this call's
// nonce (a retry of a put whose reply was lost); 0 for a duplicate.
var putMessageScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'put') == ARGV[8] then
    return 1
  end
  return 0
end
local np = tonumber(ARGV[9])
redis.call('HSET', KEYS[1], 'aor', ARGV[2], 'sender', ARGV[3], 'data', ARGV[4], 'exp', ARGV[6],
  'attempts', ARGV[7], 'put', ARGV[8], 'npending', np)
local seq = 0
for i = 10, #ARGV do
  seq = seq + 1
  if i <= 9 + np then
    redis.call('HSET', KEYS[1], 'p:' .. ARGV[i], seq)
  else
    redis.call('HSET', KEYS[1], 'd:' .. ARGV[i], seq)
  end
end
redis.call('HSET', KEYS[1], 'seq', seq)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
return 1
`)

// removeMessageBody defines remove(aor): it deletes the message KEYS[1]
// (ID ARGV[1]) and its entries in the arrival index KEYS[2], the expiry
// index KEYS[3] and the AOR's index (ARGV[2] is the AOR-index prefix).
const removeMessageBody = `
local function remove(aor)
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', ARGV[2] .. aor, ARGV[1])
end
`

// acknowledgeScript moves a device from pending to delivered and deletes
// the message when no device is pending any more.
//
//	KEYS[1] message hash   KEYS[2] arrival index   KEYS[3] expiry index
//	ARGV    id, AOR-index prefix, instance
//
// An instance that is not pending changes nothing. Reply: the number of
// devices still pending, -1 when the message is absent.
var acknowledgeScript = goredis.NewScript(removeMessageBody + `
local aor = redis.call('HGET', KEYS[1], 'aor')
if not aor then
  return -1
end
local np = tonumber(redis.call('HGET', KEYS[1], 'npending') or 0)
if redis.call('HDEL', KEYS[1], 'p:' .. ARGV[3]) == 1 then
  np = np - 1
  redis.call('HSET', KEYS[1], 'd:' .. ARGV[3], redis.call('HINCRBY', KEYS[1], 'seq', 1), 'npending', np)
end
if np <= 0 then
  remove(aor)
  return 0
end
return np
`)

// deleteMessageScript removes a message and its index entries.
//
//	KEYS, ARGV as acknowledgeScript without the instance
//
// Reply: 1 when removed, 0 when absent (leftover index entries of the ID
// in the two global indexes are removed too).
var deleteMessageScript = goredis.NewScript(removeMessageBody + `
local aor = redis.call('HGET', KEYS[1], 'aor')
if not aor then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
remove(aor)
return 1
`)

// addPendingScript adds a device to a message's pending devices unless it
// is pending or delivered already.
//
//	KEYS[1] message hash
//	ARGV    instance
//
// Reply: 1 when added, 0 when already there, -1 when the message is absent.
var addPendingScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
if redis.call('HEXISTS', KEYS[1], 'p:' .. ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[1], 'd:' .. ARGV[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'p:' .. ARGV[1], redis.call('HINCRBY', KEYS[1], 'seq', 1))
redis.call('HINCRBY', KEYS[1], 'npending', 1)
return 1
`)

// countAttemptScript adds one to a message's attempts.
//
//	KEYS[1] message hash
//
// Reply: the new count, -1 when the message is absent (no hash is created).
var countAttemptScript = goredis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
`)

// listMessagesScript reads the messages that match a filter, in arrival
// order, in one consistent step.
//
//	KEYS[1] arrival index   KEYS[2] expiry index   KEYS[3] an AOR's index (optional)
//	ARGV[1] now (unix ms)   ARGV[2] "1" for expired messages, "0" for live ones
//	ARGV[3] limit (0 = none)   ARGV[4] message-key prefix
//	ARGV[5] an instance that must be pending ('' = any)
//
// With KEYS[3] it walks the AOR's index; otherwise live messages come from
// the arrival index, expired ones from the expiry index (only those due),
// ordered by their arrival score. A message has expired when its exp is
// not after now. Walks go in score (millisecond) order, then by ID bytes;
// the node sorts the reply by the exact Received, so once the limit is
// reached the script still takes every match in the same millisecond.
// Index members without a message are removed.
//
// Reply: {id, {field, value, ...}, ...}.
var listMessagesScript = goredis.NewScript(`
local now, expired, limit = tonumber(ARGV[1]), ARGV[2] == '1', tonumber(ARGV[3])
local mp, inst = ARGV[4], ARGV[5]
local out, n, last, stale = {}, 0, nil, {}
local function take(id, score)
  if limit > 0 and n >= limit and score ~= last then
    return false
  end
  local k = mp .. id
  local exp = redis.call('HGET', k, 'exp')
  if not exp then
    stale[#stale + 1] = id
    return true
  end
  if (tonumber(exp) <= now) == expired and (inst == '' or redis.call('HEXISTS', k, 'p:' .. inst) == 1) then
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', k)
    n = n + 1
    last = score
  end
  return true
end
local function walk(key)
  local start = 0
  while true do
    local page = redis.call('ZRANGE', key, start, start + 99, 'WITHSCORES')
    if #page == 0 then
      return
    end
    for i = 1, #page, 2 do
      if not take(page[i], tonumber(page[i + 1])) then
        return
      end
    end
    start = start + 100
  end
end
if KEYS[3] then
  walk(KEYS[3])
elseif not expired then
  walk(KEYS[1])
else
  local due = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
    due[#due + 1] = {id, tonumber(redis.call('ZSCORE', KEYS[1], id) or 0)}
  end
  table.sort(due, function(a, b) return a[2] < b[2] end)
  for _, e in ipairs(due) do
    if not take(e[1], e[2]) then
      break
    end
  end
end
for _, id in ipairs(stale) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if KEYS[3] then
    redis.call('ZREM', KEYS[3], id)
  end
end
return out
`)

// leaseScript takes a lease when it is free (SET PX), renews it when the
// caller holds it, and refuses it otherwise: the SET NX and the
// compare-and-renew in one step, one round trip.
//
//	KEYS[1] lease key
//	ARGV    node, ttl (ms)
//
// Reply: 1 when the node holds the lease now, 0 when another node does.
var leaseScript = goredis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`)

// releaseLeaseScript deletes a lease only while the caller holds it
// (compare-and-delete).
//
//	KEYS[1] lease key
//	ARGV    node
var releaseLeaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// The registration scripts below declare the keys they name up front, all
// with the {reg} hash tag; they build record keys and per-state sets from
// prefixes that carry the same tag, so every key they touch is in one
// slot. A record's hash holds:
//
//	data      the Registration as JSON without Token, AOR, Instance, State
//	          and Gen
//	aor, instance, state   raw bytes
//	gen       the generation (HINCRBY: every write adds one)
//	ix        the record's member in the AOR index
//	put       the nonce of the PutRegistration call that wrote it last
//
// Every record has one member in the schedule (score: its schedule entry,
// unix ms), one in the AOR index and one in the set of its state; the set
// of state names lists the states whose set is not empty. No key expires.

// dropStateBody defines drop(names, prefix, state, token): it removes
// token from the set of state and the state's name from names when its
// set is empty then.
const dropStateBody = `
local function drop(names, prefix, state, token)
  redis.call('SREM', prefix .. state, token)
  if redis.call('EXISTS', prefix .. state) == 0 then
    redis.call('SREM', names, state)
  end
end
`

// putRegistrationScript stores a registration, with or without comparing
// its generation.
//
//	KEYS[1] record   KEYS[2] schedule   KEYS[3] AOR index   KEYS[4] state names
//	ARGV[1] token    ARGV[2] "1" to compare the generation   ARGV[3] expected gen
//	ARGV[4] data     ARGV[5] aor   ARGV[6] instance   ARGV[7] state
//	ARGV[8] Due (unix ms)   ARGV[9] AOR-index member   ARGV[10] state-set prefix
//	ARGV[11] the call's nonce
//
// An absent record has generation 0. When the stored record carries this
// call's nonce (go-redis retrying a put whose reply was lost) it changes
// nothing and returns the stored generation. Reply: the new generation, -1
// on a conflict.
var putRegistrationScript = goredis.NewScript(dropStateBody + `
local cur = redis.call('HMGET', KEYS[1], 'gen', 'state', 'ix', 'put')
if cur[4] == ARGV[11] and cur[1] then
  return tonumber(cur[1])
end
if ARGV[2] == '1' and (cur[1] or '0') ~= ARGV[3] then
  return -1
end
local tok, state = ARGV[1], ARGV[7]
if cur[2] and cur[2] ~= state then
  drop(KEYS[4], ARGV[10], cur[2], tok)
end
redis.call('SADD', ARGV[10] .. state, tok)
redis.call('SADD', KEYS[4], state)
if cur[3] and cur[3] ~= ARGV[9] then
  redis.call('ZREM', KEYS[3], cur[3])
end
redis.call('ZADD', KEYS[3], 0, ARGV[9])
redis.call('ZADD', KEYS[2], ARGV[8], tok)
redis.call('HSET', KEYS[1], 'data', ARGV[4], 'aor', ARGV[5], 'instance', ARGV[6], 'state', state,
  'ix', ARGV[9], 'put', ARGV[11])
return redis.call('HINCRBY', KEYS[1], 'gen', 1)
`)

// deleteRegistrationScript removes a registration and its entries.
//
//	KEYS    as putRegistrationScript
//	ARGV    token, state-set prefix
//
// Reply: 1 when removed, 0 when absent (a leftover schedule entry of the
// token is removed too).
var deleteRegistrationScript = goredis.NewScript(dropStateBody + `
local cur = redis.call('HMGET', KEYS[1], 'state', 'ix')
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
if cur[2] then
  redis.call('ZREM', KEYS[3], cur[2])
end
if cur[1] then
  drop(KEYS[4], ARGV[2], cur[1], ARGV[1])
end
return 1
`)

// claimDueScript claims the registrations due at now: ZRANGEBYSCORE -inf
// now LIMIT 0 k reads the earliest entries (ties by token), and each one
// found is moved to the lease's end with ZADD, so O(k log n) for k records
// among n. A member whose record is gone is removed from the schedule and
// from every state set instead of being returned (its AOR-index member,
// whose name only the record knew, is dropped by the next listing), and
// further entries are read in its place.
//
//	KEYS[1] schedule   KEYS[2] state names
//	ARGV[1] now (unix ms)   ARGV[2] lease end (unix ms, after now)
//	ARGV[3] limit   ARGV[4] record prefix   ARGV[5] state-set prefix
//
// Reply: {token, data, aor, instance, state, gen, ...}, earliest first.
var claimDueScript = goredis.NewScript(dropStateBody + `
local limit, n, out = tonumber(ARGV[3]), 0, {}
while n < limit do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, limit - n)
  if #due == 0 then
    break
  end
  for _, tok in ipairs(due) do
    local k = ARGV[4] .. tok
    local f = redis.call('HMGET', k, 'data', 'aor', 'instance', 'state', 'gen')
    if f[1] then
      redis.call('ZADD', KEYS[1], ARGV[2], tok)
      out[#out + 1] = tok
      for i = 1, 5 do
        out[#out + 1] = f[i] or ''
      end
      n = n + 1
    else
      redis.call('ZREM', KEYS[1], tok)
      redis.call('DEL', k)
      for _, st in ipairs(redis.call('SMEMBERS', KEYS[2])) do
        drop(KEYS[2], ARGV[5], st, tok)
      end
    end
  end
end
return out
`)

// listRegistrationsScript reads one page of registrations in AOR-index
// order.
//
//	KEYS[1] AOR index
//	ARGV[1], ARGV[2] ZRANGEBYLEX bounds   ARGV[3] page size   ARGV[4] record prefix
//
// A member's token follows the first 00 01 in it (regIndexMember). Members
// whose record is gone, or whose record has another member, are removed.
// Reply: {members read, last member read, token, data, aor, instance,
// state, gen, ...}.
var listRegistrationsScript = goredis.NewScript(`
local ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local out = {#ms, ms[#ms] or ''}
for _, m in ipairs(ms) do
  local i = string.find(m, '\0\1', 1, true)
  local tok = i and string.sub(m, i + 2) or ''
  local f = redis.call('HMGET', ARGV[4] .. tok, 'data', 'aor', 'instance', 'state', 'gen', 'ix')
  if i and f[1] and f[6] == m then
    out[#out + 1] = tok
    for j = 1, 5 do
      out[#out + 1] = f[j] or ''
    end
  else
    redis.call('ZREM', KEYS[1], m)
  end
end
return out
`)

// countRegistrationsScript counts the records of each state in one
// consistent step.
//
//	KEYS[1] state names
//	ARGV    state-set prefix
//
// Reply: {state, count, ...} for the states with records.
var countRegistrationsScript = goredis.NewScript(`
local out = {}
for _, st in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local n = redis.call('SCARD', ARGV[1] .. st)
  if n > 0 then
    out[#out + 1] = st
    out[#out + 1] = n
  end
end
return out
`)
