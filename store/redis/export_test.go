package redis

// Keys returns the key names the store uses for (aor, instance, token)
// under prefix, for tests that inspect the layout.
func Keys(prefix, aor, instance, token string) (aorKey, bindingKey, tokenKey string) {
	k := keys{prefix: prefix}
	return k.aor(aor), k.binding(aor, instance), k.token(token)
}

// UniversalOptions exposes the pure options translation.
var UniversalOptions = universalOptions
