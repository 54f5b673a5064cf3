package main

import (
	"context"
	"runtime/debug"
	"time"

	"go.uber.org/zap"
)

// activity is what trimMemory watches: a request counter and the number
// of transactions in flight (proxy.Server).
type activity interface {
	Requests() uint64
	InFlight() int64
}

// trimMemory returns memory to the operating system once the daemon has
// been idle for quiet: nothing received and nothing in flight. After a
// load peak the heap is mostly garbage and finished transactions kept for
// their retransmission timers (5 s for non-INVITE, up to 32 s for INVITE);
// an idle Go heap is collected only by the forced GC every two minutes and
// returned to the OS gradually, so RSS would stay near its peak for
// minutes. The trim runs once per idle period.
func trimMemory(ctx context.Context, a activity, quiet time.Duration, log *zap.Logger) {
	// Checked every second (two atomic loads), so that the trim comes at
	// most a second after quiet, not up to a third of it later.
	every := min(quiet/3, time.Second)
	tick := time.NewTicker(every)
	defer tick.Stop()
	last := a.Requests()
	idleSince := time.Now()
	trimmed := true // nothing to give back at start
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		n := a.Requests()
		if n != last || a.InFlight() > 0 {
			last, idleSince, trimmed = n, time.Now(), false
			continue
		}
		if !trimmed && time.Since(idleSince) >= quiet {
			start := time.Now()
			debug.FreeOSMemory()
			trimmed = true
			if ce := log.Check(zap.DebugLevel, "memory returned to the OS"); ce != nil {
				ce.Write(zap.Float64("duration", time.Since(start).Seconds()))
			}
		}
	}
}
