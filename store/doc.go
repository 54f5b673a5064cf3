// Package store defines sipwake's storage contracts and model types.
//
// It imports nothing internal and no SIP library: the proxy, the registrar
// and the wake module speak to a Store, and store/embedded (bbolt) and
// store/redis (go-redis) implement it. store/storetest holds the one
// conformance suite every implementation must pass.
package store
