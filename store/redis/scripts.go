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
var putScript = goredis.NewScript(`
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
return {'ok', prev, prevtok, dropped}
`)

// deleteScript removes one binding.
//
//	KEYS[1] AOR set            KEYS[2] binding key
//	ARGV    now, instance
//
// Reply: {token} when a live binding was removed, nil otherwise (an expired
// leftover is removed too).
var deleteScript = goredis.NewScript(`
local f = redis.call('HMGET', KEYS[2], 'data', 'token')
local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
if not f[1] or not score or tonumber(score) <= tonumber(ARGV[1]) then
  return false
end
return {f[2] or ''}
`)

// deleteAORScript removes every binding of an AOR.
//
//	KEYS[1] AOR set
//	ARGV    now, binding-key prefix
//
// Reply: {instance, token, ...} of the live bindings removed.
var deleteAORScript = goredis.NewScript(`
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
return out
`)

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
