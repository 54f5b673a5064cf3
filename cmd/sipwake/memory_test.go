package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

type fakeActivity struct {
	req      atomic.Uint64
	inflight atomic.Int64
}

func (f *fakeActivity) Requests() uint64 { return f.req.Load() }
func (f *fakeActivity) InFlight() int64  { return f.inflight.Load() }

// TestTrimMemoryOncePerIdlePeriod: no trim while busy, one trim after the
// quiet period, none again until activity resumes and stops.
func TestTrimMemoryOncePerIdlePeriod(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	a := &fakeActivity{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const quiet = 150 * time.Millisecond
	done := make(chan struct{})
	go func() { trimMemory(ctx, a, quiet, zap.New(core)); close(done) }()

	count := func() int { return logs.FilterMessage("memory returned to the OS").Len() }
	busyUntil := time.Now().Add(3 * quiet)
	for time.Now().Before(busyUntil) {
		a.req.Add(1)
		time.Sleep(quiet / 10)
	}
	if n := count(); n != 0 {
		t.Fatalf("trimmed %d times while busy", n)
	}
	deadline := time.Now().Add(20 * quiet)
	for count() == 0 && time.Now().Before(deadline) {
		time.Sleep(quiet / 10)
	}
	if count() != 1 {
		t.Fatalf("no trim after an idle period")
	}
	time.Sleep(3 * quiet)
	if n := count(); n != 1 {
		t.Fatalf("trimmed %d times in one idle period", n)
	}
	a.inflight.Store(1) // a long transaction: busy, no trim
	time.Sleep(3 * quiet)
	if n := count(); n != 1 {
		t.Fatalf("trimmed with a transaction in flight")
	}
	cancel()
	<-done
}
