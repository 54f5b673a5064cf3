// Package storetest is the conformance suite every store.Store backend must
// pass, and helpers to run the real peers it needs (redis-server).
//
// A backend's test calls Run (or RunWithOptions) with a function that opens
// a store for a node id:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, nodeID string) store.Store {
//			s, err := mystore.Open(t.Context(), ...)
//			if err != nil {
//				t.Fatal(err)
//			}
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// The package imports no backend: it only speaks the store contracts.
package storetest
