package redis

import (
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sipwake/sipwake/store/storetest"
)

// TestPutMessageScriptNonce: a put retried after a lost reply (same
// nonce) still reports created; another put of the ID (another nonce)
// reports a duplicate.
func TestPutMessageScriptNonce(t *testing.T) {
	addr := storetest.StartRedis(t)
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	k := keys{prefix: "nonce:"}
	now := time.Now()
	put := func(nonce string) int {
		t.Helper()
		n, err := putMessageScript.Run(t.Context(), c,
			[]string{k.msg("m"), k.msgIndex(), k.msgExpiry(), k.msgAOR("sip:a@x")},
			"m", "sip:a@x", "", `{}`, ms(now), ms(now.Add(time.Hour)), 0, nonce, 1, "d1").Int()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, step := range []struct {
		nonce string
		want  int
	}{{"first", 1}, {"first", 1}, {"second", 0}, {"first", 1}} {
		if got := put(step.nonce); got != step.want {
			t.Errorf("put with nonce %q = %d, want %d", step.nonce, got, step.want)
		}
	}
}
