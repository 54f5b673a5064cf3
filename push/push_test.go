package push

import (
	"strings"
	"testing"
)

// The README documents these values: apps compute the same UUID.
func TestDerivedIDs(t *testing.T) {
	const callID = "a84b4c76e66710@pc33.atlanta.example.com"
	if got := UUIDFromCallID(callID); got != "a029b836-3d66-52be-b88f-0821367915e4" {
		t.Errorf("UUIDFromCallID = %s", got)
	}
	if got := CollapseID(callID); got != "call-662acf87a5d2bf4a90da2f6080ef1fa5" {
		t.Errorf("CollapseID = %s", got)
	}
	if got := CollapseID(strings.Repeat("x", 500)); len(got) > 64 {
		t.Errorf("collapse id of %d bytes, APNs takes 64", len(got))
	}
	if p := (Payload{Event: EventCall, CallID: callID}).Fields(); p["uuid"] != UUIDFromCallID(callID) {
		t.Errorf("Fields uuid = %q", p["uuid"])
	}
}
