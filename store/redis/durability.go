package redis

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	goredis "github.com/redis/go-redis/v9"
)

// Durability is what the Redis server says about keeping writes, as
// CheckDurability found it: whether a MESSAGE answered 202 survives a
// crash of the server (see README.md, Durability).
type Durability struct {
	// AppendOnly is the server's appendonly setting, "yes" or "no"; ""
	// when it would not say.
	AppendOnly string
	// AppendFsync is the server's appendfsync setting: "always",
	// "everysec" or "no"; "" when it would not say.
	AppendFsync string
	// ConfigDenied: the server refused CONFIG GET (disabled, renamed or
	// not permitted to this user, as on managed services); AppendOnly
	// then comes from INFO persistence when the server answers that, and
	// AppendFsync is unknown.
	ConfigDenied bool
	// Replicas is the number of replicas connected to the primary (INFO
	// replication); -1 when unknown.
	Replicas int
	// WaitReplicas is Options.WaitReplicas: how many replicas PutMessage
	// waits for.
	WaitReplicas int
}

// Durable reports whether a message PutMessage reported stored survives
// a crash of the Redis server or of its host: an append-only file fsynced
// before every reply (appendfsync always), or with appendfsync everysec a
// WAIT for replicas (Options.WaitReplicas), unless fewer replicas than
// that are known to be connected.
func (d Durability) Durable() bool { return len(d.Warnings()) == 0 }

// Warnings explains, one sentence each, why stored messages are not
// durable (or why puts will fail): for the daemon to log at startup.
// None when Durable.
func (d Durability) Warnings() []string {
	var w []string
	waits := d.WaitReplicas > 0
	switch d.AppendOnly {
	case "no":
		w = append(w, "redis appendonly is off: a Redis restart loses every stored message already answered 202 (set appendonly yes and appendfsync always)")
	case "":
		w = append(w, "redis would not tell its appendonly setting (CONFIG GET refused): check that it runs with appendonly yes and appendfsync always, or everysec with wait_replicas")
	default:
		switch d.AppendFsync {
		case "always":
		case "everysec":
			if !waits {
				w = append(w, "redis appendfsync is everysec without WAIT: a crash of the Redis host can lose about the last second of messages already answered 202 (set appendfsync always, or wait_replicas)")
			}
		case "":
			if !waits {
				w = append(w, "redis would not tell its appendfsync setting (CONFIG GET refused): unless it is always, a crash of the Redis host can lose messages already answered 202")
			}
		default:
			w = append(w, fmt.Sprintf("redis appendfsync is %q: the OS decides when the append-only file reaches the disk, so a crash of the Redis host can lose many seconds of messages already answered 202 (set appendfsync always)", d.AppendFsync))
		}
	}
	if waits && d.Replicas >= 0 && d.Replicas < d.WaitReplicas {
		w = append(w, fmt.Sprintf("redis has %d connected replicas but messages wait for %d: every MESSAGE put fails until enough replicas are connected", d.Replicas, d.WaitReplicas))
	}
	return w
}

// CheckDurability asks the server (in a Cluster, every primary, keeping
// the weakest answer) for its appendonly and appendfsync settings with
// CONFIG GET and for its connected replicas with INFO replication. A
// server that refuses CONFIG GET is not an error: AppendOnly then comes
// from INFO persistence (aof_enabled) and AppendFsync stays "". It fails
// only when the server cannot be reached.
func (s *Store) CheckDurability(ctx context.Context) (Durability, error) {
	if err := s.begin(ctx); err != nil {
		return Durability{}, fail("check durability", err)
	}
	cc, ok := s.client.(*goredis.ClusterClient)
	if !ok {
		d, err := checkDurability(ctx, s.client)
		if err != nil {
			return Durability{}, fail("check durability", err)
		}
		d.WaitReplicas = s.waitReplicas
		return d, nil
	}
	var mu sync.Mutex
	var all []Durability
	err := cc.ForEachMaster(ctx, func(ctx context.Context, c *goredis.Client) error {
		d, err := checkDurability(ctx, c)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Options().Addr, err)
		}
		mu.Lock()
		all = append(all, d)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return Durability{}, fail("check durability", err)
	}
	d := weakest(all)
	d.WaitReplicas = s.waitReplicas
	return d, nil
}

// checkDurability asks one server.
func checkDurability(ctx context.Context, c goredis.Cmdable) (Durability, error) {
	d := Durability{Replicas: -1}
	conf, err := c.ConfigGet(ctx, "append*").Result()
	var rerr goredis.Error
	switch {
	case err == nil:
		d.AppendOnly, d.AppendFsync = conf["appendonly"], conf["appendfsync"]
	case errors.As(err, &rerr):
		d.ConfigDenied = true
	default:
		return d, fmt.Errorf("config get: %w", err)
	}
	if d.AppendOnly == "" {
		if v, ok := infoField(ctx, c, "persistence", "aof_enabled"); ok {
			d.AppendOnly = map[string]string{"0": "no", "1": "yes"}[v]
		}
	}
	if v, ok := infoField(ctx, c, "replication", "connected_slaves"); ok {
		if n, err := strconv.Atoi(v); err == nil {
			d.Replicas = n
		}
	}
	return d, nil
}

// infoField returns one field of an INFO section; ok is false when the
// server refused INFO or has no such field.
func infoField(ctx context.Context, c goredis.Cmdable, section, field string) (string, bool) {
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, true
		}
	}
	return "", false
}

// weakest merges the answers of several primaries into the weakest one.
func weakest(all []Durability) Durability {
	if len(all) == 0 {
		return Durability{Replicas: -1}
	}
	// Ranks from weakest: unknown, no, then the stronger settings.
	aofRank := map[string]int{"": 0, "no": 1, "yes": 2}
	fsyncRank := map[string]int{"": 0, "no": 1, "everysec": 2, "always": 3}
	d := all[0]
	for _, o := range all[1:] {
		if aofRank[o.AppendOnly] < aofRank[d.AppendOnly] {
			d.AppendOnly = o.AppendOnly
		}
		if fsyncRank[o.AppendFsync] < fsyncRank[d.AppendFsync] {
			d.AppendFsync = o.AppendFsync
		}
		d.ConfigDenied = d.ConfigDenied || o.ConfigDenied
		if o.Replicas < d.Replicas {
			d.Replicas = o.Replicas
		}
	}
	return d
}
