package proxy

import (
	"context"
	"log/slog"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Field names of the log vocabulary (INTERFACE.md "Logs").
const (
	FieldCallID     = "call_id"
	FieldCSeq       = "cseq"
	FieldMethod     = "method"
	FieldStatus     = "status"
	FieldAOR        = "aor"
	FieldInstance   = "instance"
	FieldSrc        = "src"
	FieldDst        = "dst"
	FieldTransport  = "transport"
	FieldPNProvider = "pn_provider"
	FieldPNToken    = "pn_token"
	FieldDuration   = "duration"
)

// Mask shows at most the last 6 characters of a secret (push token,
// binding token), as "…abc123"; short secrets are hidden entirely.
func Mask(secret string) string {
	if secret == "" {
		return ""
	}
	if len(secret) <= 8 {
		return "…"
	}
	return "…" + secret[len(secret)-6:]
}

// MaskAuthorization hides the credentials of an Authorization or
// Proxy-Authorization value, keeping the scheme, username and realm.
func MaskAuthorization(v string) string {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	var keep []string
	for _, part := range strings.Split(rest, ",") {
		k, _, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(k) {
		case "username", "realm", "algorithm":
			keep = append(keep, strings.TrimSpace(part))
		}
	}
	return strings.TrimSpace(scheme + " " + strings.Join(keep, ", ") + " (credentials hidden)")
}

// PNToken is the masked pn_token field.
func PNToken(token string) zap.Field { return zap.String(FieldPNToken, Mask(token)) }

// CallID is the call_id field.
func CallID(id string) zap.Field { return zap.String(FieldCallID, id) }

// AOR is the aor field.
func AOR(aor string) zap.Field { return zap.String(FieldAOR, aor) }

// Status is the status field.
func Status(code int) zap.Field { return zap.Int(FieldStatus, code) }

// RequestFields are the fields of a transaction's child logger.
func RequestFields(req *sip.Request, src, transport string) []zap.Field {
	fs := make([]zap.Field, 0, 5)
	if cid := req.CallID(); cid != nil {
		fs = append(fs, zap.String(FieldCallID, cid.Value()))
	}
	fs = append(fs, zap.String(FieldMethod, string(req.Method)))
	if cs := req.CSeq(); cs != nil {
		fs = append(fs, zap.Uint32(FieldCSeq, cs.SeqNo))
	}
	fs = append(fs, zap.String(FieldSrc, src), zap.String(FieldTransport, lowerTransport(transport)))
	return fs
}

// requestFields are RequestFields worked out only when a line is written:
// most transactions log nothing at the configured level.
type requestFields struct {
	req            *sip.Request
	src, transport string
}

func (f requestFields) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	for _, fd := range RequestFields(f.req, f.src, f.transport) {
		fd.AddTo(enc)
	}
	return nil
}

// lowerTransport is the transport name as logged, without an allocation
// for the usual ones.
func lowerTransport(tp string) string {
	switch tp {
	case "UDP", "udp":
		return "udp"
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	}
	return strings.ToLower(tp)
}

// slogBridge sends sipgo's slog records to zap. sipgo logs raw messages
// on parse errors (attribute "data"); those may hold tokens and
// credentials, so they are dropped, and every sipgo record is logged at
// debug level at most, except parse failures, which are logged at warn
// without their data.
type slogBridge struct {
	log   *zap.Logger
	attrs []slog.Attr
}

func newSlogBridge(l *zap.Logger) *slog.Logger {
	return slog.New(&slogBridge{log: l})
}

func (b *slogBridge) Enabled(_ context.Context, lvl slog.Level) bool {
	return b.log.Core().Enabled(zapcore.DebugLevel) || lvl >= slog.LevelError
}

func (b *slogBridge) Handle(_ context.Context, rec slog.Record) error {
	level := zapcore.DebugLevel
	msg := rec.Message
	if strings.HasPrefix(msg, "failed to parse") {
		level, msg = zapcore.WarnLevel, "message dropped"
	}
	ce := b.log.Check(level, msg)
	if ce == nil {
		return nil
	}
	fields := make([]zap.Field, 0, rec.NumAttrs()+len(b.attrs)+1)
	add := func(a slog.Attr) bool {
		switch a.Key {
		case "data", "msg", "req", "res":
			return true
		case "error":
			e := a.Value.String()
			if len(e) > 160 {
				e = e[:160] + "…"
			}
			fields = append(fields, zap.String("error", e))
			return true
		}
		fields = append(fields, zap.Any(a.Key, a.Value.Any()))
		return true
	}
	for _, a := range b.attrs {
		add(a)
	}
	rec.Attrs(add)
	if level == zapcore.WarnLevel {
		fields = append(fields, zap.String("reason", "unparsable"))
	}
	ce.Write(fields...)
	return nil
}

func (b *slogBridge) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &slogBridge{log: b.log, attrs: append(append([]slog.Attr(nil), b.attrs...), attrs...)}
}

func (b *slogBridge) WithGroup(string) slog.Handler { return b }
