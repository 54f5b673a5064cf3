package main

import (
	"fmt"
	"io"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// logTimeLayout is RFC 3339 in UTC with microseconds, fixed width so lines sort as text.
const logTimeLayout = "2006-01-02T15:04:05.000000Z07:00"

// newLogger builds the root logger from log.level and log.format, writing to out (stdout in
// the daemon). JSON lines carry ts, level, logger and msg first, then the fields; no
// caller, no stack traces, no sampling. Modules get a child with log.Named("proxy") and so
// on, which fills "logger". The returned level changes the level of every logger at run
// time (PUT /v1/log/level).
func newLogger(cfg LogConfig, out io.Writer) (*zap.Logger, zap.AtomicLevel, error) {
	var lvl zapcore.Level
	switch cfg.Level {
	case "debug", "info", "warn", "error":
		if err := lvl.UnmarshalText([]byte(cfg.Level)); err != nil {
			return nil, zap.AtomicLevel{}, fmt.Errorf("log.level: %w", err)
		}
	default:
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.level: %q is not one of debug, info, warn, error", cfg.Level)
	}
	encCfg := zapcore.EncoderConfig{
		TimeKey:        "ts",
		LevelKey:       "level",
		NameKey:        "logger",
		MessageKey:     "msg",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeTime:     utcTimeEncoder,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeDuration: zapcore.SecondsDurationEncoder, // "duration" is in seconds (INTERFACE.md)
		EncodeName:     zapcore.FullNameEncoder,
	}
	var enc zapcore.Encoder
	switch cfg.Format {
	case "json":
		enc = zapcore.NewJSONEncoder(encCfg)
	case "console":
		encCfg.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(encCfg)
	default:
		return nil, zap.AtomicLevel{}, fmt.Errorf("log.format: %q is not one of json, console", cfg.Format)
	}
	level := zap.NewAtomicLevelAt(lvl)
	ws := zapcore.Lock(zapcore.AddSync(out))
	log := zap.New(zapcore.NewCore(enc, ws, level), zap.ErrorOutput(ws))
	return log, level, nil
}

func utcTimeEncoder(t time.Time, enc zapcore.PrimitiveArrayEncoder) {
	enc.AppendString(t.UTC().Format(logTimeLayout))
}
