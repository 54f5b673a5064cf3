package proxy

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestUDPBufferCapWarned: a UDP listener whose receive buffer the kernel
// caps below the size asked for says so once, with both sizes; one that
// gets it says nothing.
func TestUDPBufferCapWarned(t *testing.T) {
	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Fatalf("rmem_max: %v", err)
	}
	rmemMax, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("rmem_max %q: %v", raw, err)
	}
	for _, c := range []struct {
		name string
		ask  int
		warn bool
	}{
		{"above rmem_max", 2*rmemMax + 4096, true},
		{"within rmem_max", min(rmemMax, 64<<10), false},
	} {
		t.Run(c.name, func(t *testing.T) {
			core, logs := observer.New(zapcore.WarnLevel)
			srv := startServer(t, Config{
				NodeID:         "n1",
				Listen:         []Listen{{Network: "udp", Addr: "127.0.0.1:0"}},
				Upstream:       "sip:127.0.0.2:5060",
				Logger:         zap.New(core),
				UDPBufferBytes: c.ask,
			})
			warned := logs.FilterMessage("udp receive buffer capped by net.core.rmem_max").All()
			if !c.warn {
				if len(warned) != 0 {
					t.Fatalf("asked %d bytes (rmem_max %d): warned %v", c.ask, rmemMax, warned[0].ContextMap())
				}
				return
			}
			if len(warned) != 1 {
				t.Fatalf("asked %d bytes (rmem_max %d): %d warnings, want 1", c.ask, rmemMax, len(warned))
			}
			f := warned[0].ContextMap()
			if f["asked_bytes"] != int64(c.ask) || f["granted_bytes"] != int64(rmemMax) || f["addr"] != srv.Addr("udp") {
				t.Fatalf("warning fields %v, want asked %d, granted %d (rmem_max), addr %s", f, c.ask, rmemMax, srv.Addr("udp"))
			}
		})
	}
}
