package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sipwake/sipwake/cmd/sipwake/internal/testpeers"
	"github.com/sipwake/sipwake/proxy/proxytest"
	"github.com/sipwake/sipwake/store/storetest"
)

// TestE2ERedisStoreReadiness runs sipwake on a real redis-server: a
// registration is stored there; when Redis goes away /readyz answers 503
// naming the store.
func TestE2ERedisStoreReadiness(t *testing.T) {
	addr := storetest.StartRedis(t)
	kam := startPBX(t, testpeers.KamailioOptions{})
	cfg := e2eConfig(t, kam, t.TempDir())
	cfg.Store.Driver = "redis"
	cfg.Store.Redis.Addresses = []string{addr}
	sw := startDaemon(t, cfg)

	ua := proxytest.NewUDP(t, "")
	cseq := 0
	if res := rawRegister(t, ua, sw.UDP, "1001", "pw1001", ";pn-provider=fcm;pn-prid=redisTokenAAAAAAAAAA;pn-param=proj-1", "", &cseq); res.StatusCode != 200 {
		t.Fatalf("register: %d", res.StatusCode)
	}
	b := sw.waitBindings(t, "sip:1001@pbx.test", 1, rawWait)[0]
	if b.Push == nil || b.Push.Provider != "fcm" {
		t.Fatalf("binding in redis: %+v", b)
	}
	base := "http://" + sw.ops.Addr().String()
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz = %d %s", code, body)
	}

	// SHUTDOWN NOSAVE over RESP: the server goes away.
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n"))
	c.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := httpGet(t, base+"/readyz")
		if code == 503 && strings.Contains(body, `"store"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz = %d %s after Redis went away", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestE2EUnreachableStoreExitsTwo: serve with a Redis that cannot be
// reached fails with exit status 2.
func TestE2EUnreachableStoreExitsTwo(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	l.Close() // nothing listens there now
	cfg := e2eConfig(t, nil, t.TempDir())
	cfg.Store.Driver = "redis"
	cfg.Store.Redis.Addresses = []string{dead}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = runServe(ctx, cfg, zap.NewNop(), zap.NewAtomicLevel())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUnavailable {
		t.Fatalf("runServe = %v, want exit status %d", err, exitUnavailable)
	}
}
