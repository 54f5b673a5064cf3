package redis

import goredis "github.com/redis/go-redis/v9"

// Keys returns the key names the store uses for (aor, instance, token)
// under prefix, for tests that inspect the layout.
func Keys(prefix, aor, instance, token string) (aorKey, bindingKey, tokenKey string) {
	k := keys{prefix: prefix}
	return k.aor(aor), k.binding(aor, instance), k.token(token)
}

// UniversalOptions exposes the pure options translation.
var UniversalOptions = universalOptions

// AddHook adds a go-redis hook to the store's client, so that tests can
// see every command it sends (round trips).
func (s *Store) AddHook(h goredis.Hook) { s.client.AddHook(h) }

// OneTrip reports whether the store writes in one round trip (not a
// Cluster client).
func (s *Store) OneTrip() bool { return s.oneTrip }

// HeldKeys returns the key names of the held-call index and of the record
// of held call id under prefix.
func HeldKeys(prefix, id string) (index, record string) {
	k := keys{prefix: prefix}
	return k.heldIndex(), k.held(id)
}

// NodeKey returns the heartbeat key of node under prefix.
func NodeKey(prefix, node string) string { return keys{prefix: prefix}.node(node) }

// MessageKeys returns the key names of the arrival index, the expiry
// index, the index of aor and the hash of message id under prefix.
func MessageKeys(prefix, aor, id string) (arrival, expiry, byAOR, message string) {
	k := keys{prefix: prefix}
	return k.msgIndex(), k.msgExpiry(), k.msgAOR(aor), k.msg(id)
}

// LeaseKey returns the key of lease name under prefix.
func LeaseKey(prefix, name string) string { return keys{prefix: prefix}.lease(name) }

// RegistrationKeys returns the key names of the schedule, the AOR index,
// the set of state names, the token set of state and the record of token
// under prefix.
func RegistrationKeys(prefix, token, state string) (due, index, states, stateSet, record string) {
	k := keys{prefix: prefix}
	return k.regDue(), k.regIndex(), k.regStates(), k.regStatePrefix() + state, k.reg(token)
}

// AccountsKey returns the key of the accounts hash under prefix.
func AccountsKey(prefix string) string { return keys{prefix: prefix}.accounts() }

// PipelineLen is how many binding writes wait in the store's automatic
// pipeline (0 without one).
func (s *Store) PipelineLen() int {
	if ap, ok := s.puts.(*goredis.AutoPipeliner); ok {
		return ap.Len()
	}
	return 0
}

// PipelineAlone sends every binding write through the automatic
// pipeline, a lone one too (tests of the pipeline itself).
func (s *Store) PipelineAlone() { s.pipelineAlone = true }

// DirectPuts is how many binding writes at once skip the pipeline.
const DirectPuts = directPuts
