package proxy

import (
	"context"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// Sanity is the first module of the chain: it answers requests that are
// malformed for a proxy (RFC 3261 §16.3 request validation) and, while the
// server drains, refuses new out-of-dialog requests with 503 and
// Retry-After.
type Sanity struct {
	srv *Server
}

var _ Module = (*Sanity)(nil)

// NewSanity returns the sanity module for srv.
func NewSanity(srv *Server) *Sanity { return &Sanity{srv: srv} }

// Name implements Module.
func (*Sanity) Name() string { return "sanity" }

// Wrap implements Module.
func (m *Sanity) Wrap(next Handler) Handler {
	return HandlerFunc(func(ctx context.Context, r *Request) {
		if code, reason, hdr := m.check(r); code != 0 {
			if r.Msg.IsAck() {
				return
			}
			if ce := r.Check(zap.DebugLevel, "request rejected"); ce != nil {
				ce.Write(Status(code), zap.String("reason", reason))
			}
			if hdr != nil {
				r.Respond(code, reason, hdr)
			} else {
				r.Respond(code, reason)
			}
			return
		}
		next.ServeSIP(ctx, r)
	})
}

// single-valued headers that must appear exactly once (RFC 3261 §7.3.1,
// RFC 4475 §3.3.8).
var singleHeaders = [...]string{"call-id", "from", "to", "cseq", "max-forwards", "content-length"}

func (m *Sanity) check(r *Request) (int, string, sip.Header) {
	req := r.Msg
	if req.SipVersion != "SIP/2.0" {
		return 505, "Version Not Supported", nil
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil {
		return 400, "Bad Request (missing From, To, Call-ID or CSeq)", nil
	}
	counts := [len(singleHeaders)]int{}
	for _, h := range req.Headers() {
		n := h.Name()
		for i, s := range singleHeaders {
			if strings.EqualFold(n, s) {
				counts[i]++
			}
		}
	}
	for i, c := range counts {
		if c > 1 {
			return 400, "Bad Request (multiple " + singleHeaders[i] + ")", nil
		}
	}
	if req.CSeq().MethodName != req.Method {
		return 400, "Bad Request (CSeq method mismatch)", nil
	}
	if sc := req.Recipient.Scheme; !strings.EqualFold(sc, "sip") && !strings.EqualFold(sc, "sips") {
		return 416, "Unsupported URI Scheme", nil
	}
	if req.Recipient.Host == "" {
		return 400, "Bad Request (no host in Request-URI)", nil
	}
	if mf := req.MaxForwards(); mf != nil && *mf == 0 && !(req.Method == sip.OPTIONS && m.srv.isForUs(r)) && !req.IsAck() {
		// RFC 3261 §16.3 step 3, before any routing decision (a request
		// for elsewhere is refused 483, not 403); an OPTIONS for sipwake
		// itself is answered as its final recipient (§11).
		return 483, "Too Many Hops", nil
	}
	if req.Recipient.Headers.Length() > 0 {
		// Headers escaped in a Request-URI are never applied (RFC 4475
		// §3.1.2.11): refuse instead of guessing.
		return 400, "Bad Request (headers in Request-URI)", nil
	}
	if pr := HeadersNamed(req, "Proxy-Require"); len(pr) > 0 {
		var tags []string
		for _, h := range pr {
			for _, t := range strings.Split(h.Value(), ",") {
				if t = strings.TrimSpace(t); t != "" {
					tags = append(tags, t)
				}
			}
		}
		return 420, "Bad Extension", sip.NewHeader("Unsupported", strings.Join(tags, ", "))
	}
	if m.srv.Draining() && !r.InDialog() && !req.IsAck() && !req.IsCancel() {
		return 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(int(m.srv.cfg.RetryAfter.Seconds())))
	}
	return 0, "", nil
}
