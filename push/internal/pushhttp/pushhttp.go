package pushhttp

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sipwake/sipwake/push"
)

// DefaultTimeout bounds one push request when the adapter's Timeout is
// zero.
const DefaultTimeout = 10 * time.Second

// TLSConfig returns a client TLS configuration that trusts the system
// roots plus every certificate of the PEM file caFile (none when caFile is
// empty). TLS 1.2 is the minimum, as both Apple and Google require.
func TLSConfig(caFile string) (*tls.Config, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile == "" {
		return conf, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read ca file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca file %s: no PEM certificate found", caFile)
	}
	conf.RootCAs = pool
	return conf, nil
}

// NewTransport returns a transport for push endpoints over conf, keeping
// connections open between pushes (providers treat rapid reconnects as
// abuse). With h2Only it speaks HTTP/2 only (APNs), checking idle
// connections with pings; otherwise it prefers HTTP/2 and falls back to
// HTTP/1.1.
func NewTransport(conf *tls.Config, h2Only bool) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSClientConfig:       conf,
		TLSHandshakeTimeout:   10 * time.Second,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       5 * time.Minute,
		ExpectContinueTimeout: time.Second,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: 15 * time.Second,
			PingTimeout:     15 * time.Second,
		},
	}
	if h2Only {
		p := new(http.Protocols)
		p.SetHTTP2(true)
		t.Protocols = p
	}
	return t
}

// ParseRetryAfter reads a Retry-After header value, delay-seconds or an
// HTTP date, as a duration from now; 0 when absent, malformed or past.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > 24*3600 {
			secs = 24 * 3600
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// IsTimeout reports whether err means no answer came in time: a context
// deadline or cancellation, or a network timeout.
func IsTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TransportError classifies a request that got no HTTP answer:
// ReasonTimeout when it ran out of time (err or ctx), ReasonNetwork
// otherwise. Neither is permanent.
func TransportError(ctx context.Context, provider string, err error) *push.Error {
	reason := push.ReasonNetwork
	if IsTimeout(err) || ctx.Err() != nil {
		reason = push.ReasonTimeout
	}
	return &push.Error{Provider: provider, Reason: reason, Err: withoutURL(err)}
}

// withoutURL drops the request URL from a *url.Error, keeping its
// operation and cause: an APNs URL ends with the device token, which
// must not reach the logs.
func withoutURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	prefix, ok := strings.CutSuffix(err.Error(), ue.Error())
	if !ok {
		prefix = ""
	}
	return &cause{msg: prefix + ue.Op + ": " + ue.Err.Error(), err: ue.Err}
}

// cause is an error with its message rewritten and its cause kept for
// errors.Is and errors.As.
type cause struct {
	msg string
	err error
}

// Error returns the rewritten message.
func (c *cause) Error() string { return c.msg }

// Unwrap returns the cause.
func (c *cause) Unwrap() error { return c.err }

// StatusReason is the metric reason of an HTTP status that no
// provider-specific rule classified: 429 rate limited, 5xx server error,
// 401/403 auth, 413 payload too large, any other status bad request.
func StatusReason(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return push.ReasonRateLimited
	case status >= 500:
		return push.ReasonServerError
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return push.ReasonAuth
	case status == http.StatusRequestEntityTooLarge:
		return push.ReasonPayloadTooLong
	default:
		return push.ReasonBadRequest
	}
}

// WithTimeout bounds ctx by d (DefaultTimeout when d is zero).
func WithTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		d = DefaultTimeout
	}
	return context.WithTimeout(ctx, d)
}
