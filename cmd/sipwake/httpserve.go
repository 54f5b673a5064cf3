package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// httpListener is the lifecycle the ops and admin listeners share: bind
// on start (a bind error is returned, so once start returns nil the port
// is bound), serve in a goroutine, shut down waiting for in-flight
// requests.
type httpListener struct {
	name         string // "ops", "admin": error prefix
	listen       string
	writeTimeout time.Duration

	lmu    sync.Mutex
	srv    *http.Server
	ln     net.Listener
	served chan struct{} // closed when Serve returns
}

// start binds the address and serves handler; ctx bounds the bind only.
func (h *httpListener) start(ctx context.Context, handler http.Handler, log *zap.Logger) error {
	h.lmu.Lock()
	defer h.lmu.Unlock()
	if h.srv != nil {
		return errors.New(h.name + ": already started")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", h.listen)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", h.name, err)
	}
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      h.writeTimeout,
		IdleTimeout:       60 * time.Second,
		ErrorLog:          zap.NewStdLog(log),
	}
	h.srv, h.ln, h.served = srv, ln, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(h.name+" listener stopped", zap.Error(err))
		}
	}(h.served)
	return nil
}

// Addr returns the bound address, or nil before Start.
func (h *httpListener) Addr() net.Addr {
	h.lmu.Lock()
	defer h.lmu.Unlock()
	if h.ln == nil {
		return nil
	}
	return h.ln.Addr()
}

// Shutdown stops accepting, waits for in-flight requests until ctx ends, and returns once
// the serving goroutine has exited. It is a no-op before Start.
func (h *httpListener) Shutdown(ctx context.Context) error {
	h.lmu.Lock()
	srv, done := h.srv, h.served
	h.lmu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		err = errors.Join(fmt.Errorf("%s: shutdown: %w", h.name, err), srv.Close())
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	return err
}
