package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/proxy/hep"
)

// captureStopTimeout bounds the flush of the trace and the HEP export at the end of
// serve, after the SIP listeners closed.
const captureStopTimeout = 2 * time.Second

// startCapture builds and starts the SIP message tap (the trace log at debug level, the
// trace switches of the admin API) and, when hep.address is set, the HEP exporter it
// feeds. The returned stop flushes and stops both; call it after the proxy stopped.
func startCapture(cfg *Config, log *zap.Logger, reg prometheus.Registerer) (*proxy.Tap, func(), error) {
	var sinks []proxy.PacketSink
	var exp *hep.Exporter
	if h := cfg.HEP; h.Address != "" {
		agent := hep.Agent{CaptureID: uint32(h.CaptureID), NodeName: h.NodeName}
		if agent.NodeName == "" {
			agent.NodeName = cfg.NodeID
		}
		if h.PasswordFile != "" {
			pw, err := readSecret(h.PasswordFile)
			if err != nil {
				return nil, nil, fmt.Errorf("hep.password_file: %w", err)
			}
			agent.Password = pw
		}
		var err error
		exp, err = hep.New(hep.Config{Address: h.Address, Agent: agent, Unmasked: h.Unmasked,
			Logger: log.Named("hep"), Registerer: reg})
		if err != nil {
			return nil, nil, err
		}
		sinks = append(sinks, exp)
	}
	tap := proxy.NewTap(proxy.TapConfig{Logger: log.Named("trace"), Sinks: sinks, Registerer: reg})
	if exp != nil {
		exp.Start()
	}
	tap.Start()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), captureStopTimeout)
		defer cancel()
		if err := tap.Stop(ctx); err != nil {
			log.Warn("trace not flushed", zap.Error(err))
		}
		if exp != nil {
			if err := exp.Stop(ctx); err != nil {
				log.Warn("hep export not flushed", zap.Error(err))
			}
		}
	}
	return tap, stop, nil
}
