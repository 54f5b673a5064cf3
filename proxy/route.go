package proxy

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
)

// preprocessRoute applies RFC 3261 §16.4: a Request-URI that is one of our
// Record-Route URIs (a strict router upstream) is replaced by the last
// Route; Route entries that point at us are removed, and the flow token
// they carry is remembered. It answers and returns false when the request
// must not go on.
func (s *Server) preprocessRoute(r *Request) bool {
	req := r.Msg
	if s.IsOwnURI(&req.Recipient) && req.Recipient.UriParams.Has("lr") {
		// Strict routing: the Request-URI is our Record-Route value.
		routes := HeadersNamed(req, "Route")
		if len(routes) > 0 {
			if last, ok := routes[len(routes)-1].(*sip.RouteHeader); ok {
				s.noteFlow(r, &req.Recipient)
				req.Recipient = last.Address
				removeLastHeader(req, "Route", last)
			}
		}
	}
	for {
		rt := req.Route()
		if rt == nil || !s.IsOwnURI(&rt.Address) {
			break
		}
		if rt.Address.User != "" && !s.noteFlow(r, &rt.Address) {
			r.Log().Info("request refused", zap.String("reason", "forged or foreign flow token"))
			r.Respond(403, "Forbidden")
			return false
		}
		r.OwnRoute = true
		req.RemoveHeader("Route") // removes the first Route value only
		if len(HeadersNamed(req, "Route")) == 0 {
			break
		}
	}
	return true
}

// noteFlow decodes the flow token of one of our Record-Route URIs.
func (s *Server) noteFlow(r *Request, u *sip.Uri) bool {
	if u.User == "" {
		return true
	}
	cid := ""
	if h := r.Msg.CallID(); h != nil {
		cid = h.Value()
	}
	f, err := s.flows.decode(u.User, cid)
	if err != nil {
		return false
	}
	r.RouteFlow = &f
	return true
}

func removeLastHeader(req *sip.Request, name string, h sip.Header) {
	all := HeadersNamed(req, name)
	for req.RemoveHeader(name) {
	}
	for _, x := range all {
		if x != h {
			req.AppendHeader(x)
		}
	}
}

// serveFinal is the last handler of the chain: the forwarder's routing
// decision (no open relay) followed by the forward itself.
func (s *Server) serveFinal(ctx context.Context, r *Request) {
	req := r.Msg
	if req.IsCancel() {
		// A CANCEL that matched a pending INVITE was answered by the
		// transaction layer; this one matched nothing.
		r.Respond(481, "Call/Transaction Does Not Exist")
		return
	}
	if r.Target != nil {
		r.Forward(ctx, ForwardOptions{Target: *r.Target})
		return
	}
	if r.RouteFlow != nil {
		s.routeInDialog(ctx, r)
		return
	}
	if req.Route() != nil && r.OwnRoute {
		// Along a route set we were put in (no flow token): next hop.
		s.forwardToRoute(ctx, r)
		return
	}
	if !r.OwnRoute && s.isForUs(r) {
		s.answerOwn(r)
		return
	}
	if r.InDialog() {
		r.Log().Info("request refused", zap.String("reason", "in-dialog request outside our route set"))
		r.Respond(403, "Forbidden", sip.NewHeader("Warning", `399 sipwake "not in a dialog routed through this proxy"`))
		return
	}
	if r.Trusted {
		// The PBX sends to the contacts sipwake registered; a module
		// resolves those. Anything else has no device here.
		r.Respond(404, "Not Found")
		return
	}
	if t, ok := s.UpstreamTarget(); ok && s.ServesDomain(req.Recipient.Host) {
		r.Forward(ctx, ForwardOptions{Target: t})
		return
	}
	r.Log().Info("request refused", zap.String("reason", "relaying denied"), zap.String(FieldDst, req.Recipient.Host))
	r.Respond(403, "Relaying Denied")
}

// ServesDomain reports whether host is one of the PBX's domains
// (upstream.domains).
func (s *Server) ServesDomain(host string) bool {
	_, ok := s.domains[strings.ToLower(strings.Trim(host, "[]"))]
	return ok
}

// routeInDialog forwards a request routed through one of our Record-Route
// entries carrying a flow token: from the PBX side it goes down the
// device's flow; from the device it goes on along the route set.
func (s *Server) routeInDialog(ctx context.Context, r *Request) {
	f := r.RouteFlow
	fromDevice := !r.Trusted || (strings.EqualFold(f.Transport, r.Transport) && f.Remote == r.Source)
	if fromDevice {
		s.forwardToRoute(ctx, r)
		return
	}
	r.Forward(ctx, ForwardOptions{Target: Target{Dest: f.Remote, Transport: f.Transport, Flow: true, Device: true}})
}

// forwardToRoute forwards to the next Route entry, or to the Request-URI
// when the route set is used up.
func (s *Server) forwardToRoute(ctx context.Context, r *Request) {
	u := &r.Msg.Recipient
	if rt := r.Msg.Route(); rt != nil {
		u = &rt.Address
	}
	r.Forward(ctx, ForwardOptions{Target: URITarget(u)})
}

// URITarget is the next hop a URI names (RFC 3263 without DNS lookups):
// its transport parameter, else TLS for sips, else UDP; its port, else the
// transport's default.
func URITarget(u *sip.Uri) Target {
	tp := "UDP"
	if v, ok := u.UriParams.Get("transport"); ok && v != "" {
		tp = strings.ToUpper(v)
	} else if u.IsEncrypted() {
		tp = "TLS"
	}
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(tp)
	}
	return Target{Dest: net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port)), Transport: tp}
}

// isForUs reports whether the Request-URI names this proxy itself (no user
// part, our host and port).
func (s *Server) isForUs(r *Request) bool {
	return r.Msg.Recipient.User == "" && s.IsOwnURI(&r.Msg.Recipient)
}

// answerOwn answers requests addressed to sipwake itself: OPTIONS 200 while
// ready, 503 otherwise; anything else 405.
func (s *Server) answerOwn(r *Request) {
	allow := sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, UPDATE, PRACK, SUBSCRIBE, NOTIFY, REFER")
	if r.Msg.Method != sip.OPTIONS {
		if r.Msg.IsAck() {
			return
		}
		r.Respond(405, "Method Not Allowed", allow)
		return
	}
	if err := s.Ready(); err != nil {
		r.Respond(503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(int(s.cfg.RetryAfter.Seconds()))))
		return
	}
	r.Respond(200, "OK", allow, sip.NewHeader("Accept", "application/sdp"))
}

// loopHash is the RFC 3261 §16.6 step 8 loop-detection part of our branch:
// a hash over the fields that, unchanged, mean the request came back to us
// unchanged (a loop) rather than spiralling.
func loopHash(req *sip.Request, prevTopVia string) string {
	// Built on the stack and hashed in one go: the branch of every
	// request forwarded carries this hash.
	var buf [512]byte
	b := appendURIKey(buf[:0], &req.Recipient)
	b = append(b, 0)
	if f := req.From(); f != nil {
		t, _ := f.Params.Get("tag")
		b = append(b, t...)
	}
	b = append(b, 0)
	if to := req.To(); to != nil {
		t, _ := to.Params.Get("tag")
		b = append(b, t...)
	}
	b = append(b, 0)
	if c := req.CallID(); c != nil {
		b = append(b, c.Value()...)
	}
	b = append(b, 0)
	if c := req.CSeq(); c != nil {
		b = strconv.AppendUint(b, uint64(c.SeqNo), 10)
	}
	b = append(b, 0)
	b = append(b, prevTopVia...)
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}

// appendURIKey appends the parts of u that identify it, for hashing
// (not a URI's text: a parse of the same text always gives the same key).
func appendURIKey(b []byte, u *sip.Uri) []byte {
	b = append(b, u.Scheme...)
	b = append(b, ':')
	b = append(b, u.User...)
	b = append(b, ':')
	b = append(b, u.Password...)
	b = append(b, '@')
	b = append(b, u.Host...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(u.Port), 10)
	for _, kv := range u.UriParams {
		b = append(b, ';')
		b = append(b, kv.K...)
		b = append(b, '=')
		b = append(b, kv.V...)
	}
	for _, kv := range u.Headers {
		b = append(b, '&')
		b = append(b, kv.K...)
		b = append(b, '=')
		b = append(b, kv.V...)
	}
	return b
}

const branchPrefix = sip.RFC3261BranchMagicCookie + ".sw"

// looped reports whether the request already passed through us with the
// same Request-URI and dialog fields (RFC 3261 §16.3 step 4).
func (s *Server) looped(req *sip.Request) bool {
	vias := HeadersNamed(req, "Via")
	for i, h := range vias {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		b, _ := v.Params.Get("branch")
		if !strings.HasPrefix(b, branchPrefix) {
			continue
		}
		u := sip.Uri{Host: v.Host, Port: v.Port}
		if !s.IsOwnURI(&u) {
			continue
		}
		prev := ""
		if i+1 < len(vias) {
			prev = viaKey(vias[i+1])
		}
		hash, _, _ := strings.Cut(strings.TrimPrefix(b, branchPrefix), ".")
		if hash == loopHash(req, prev) {
			return true
		}
	}
	return false
}

// viaKey is the part of a Via that identifies the previous hop for loop
// detection (sent-by and branch, not the received/rport we added).
func viaKey(h sip.Header) string {
	v, ok := h.(*sip.ViaHeader)
	if !ok {
		return h.Value()
	}
	b, _ := v.Params.Get("branch")
	return v.Transport + " " + v.SentBy() + ";" + b
}
