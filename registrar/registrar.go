package registrar

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/store"
)

// Wrap implements proxy.Module: REGISTERs are handled here, requests to a
// sipwake contact are resolved to their device, the rest goes on.
func (r *Registrar) Wrap(next proxy.Handler) proxy.Handler {
	return proxy.HandlerFunc(func(ctx context.Context, req *proxy.Request) {
		if req.Msg.Method == sip.REGISTER && !req.InDialog() {
			r.register(ctx, req)
			return
		}
		if req.Target == nil && req.Msg.Recipient.User != "" && req.Server().IsOwnURI(&req.Msg.Recipient) {
			var ok bool
			if ctx, ok = r.resolve(ctx, req); !ok {
				return
			}
		}
		next.ServeSIP(ctx, req)
	})
}

// resolve resolves a request for a sipwake contact and records the binding
// in the returned context. It is kept out of Wrap's closure so that the
// closure's frame stays small: it stays on the stack of every INVITE the
// wake module holds, for the whole hold.
//
//go:noinline
func (r *Registrar) resolve(ctx context.Context, req *proxy.Request) (context.Context, bool) {
	relayed := r.relayed(req)
	b, aor, ok := r.resolveContact(ctx, req, relayed)
	if !ok {
		return ctx, false
	}
	return context.WithValue(ctx, resolvedKey{}, resolved{b: b, aor: aor, relayed: relayed}), true
}

type resolvedKey struct{}

type resolved struct {
	b       store.Binding
	aor     string // set instead of b for a contact shared by an AOR's devices
	relayed bool
}

// Resolved returns the binding whose sipwake contact the request was
// addressed to, when the registrar resolved one for it.
func Resolved(ctx context.Context) (store.Binding, bool) {
	v, ok := ctx.Value(resolvedKey{}).(resolved)
	return v.b, ok && v.aor == ""
}

// ResolvedAOR returns the AOR whose shared sipwake contact (per-AOR
// upstream contacts) the request was addressed to: it is for every
// device of the AOR. The request's Target is the device seen last.
func ResolvedAOR(ctx context.Context) (string, bool) {
	v, ok := ctx.Value(resolvedKey{}).(resolved)
	return v.aor, ok && v.aor != ""
}

// Relayed reports whether the request came from another sipwake node
// (signed relay URI) to reach a device whose flow this node owns: the
// node that sent it already did everything else (pushes, holding).
func Relayed(ctx context.Context) bool {
	v, ok := ctx.Value(resolvedKey{}).(resolved)
	return ok && v.relayed
}

// relayParam is the Request-URI parameter that signs a request relayed
// between nodes.
const relayParam = "sw-relay"

// relaySig signs (token, Call-ID) for a relay between nodes, with the
// binding-token key every node shares.
func (r *Registrar) relaySig(token, callID string) string {
	m := hmac.New(sha256.New, r.tokenKey)
	m.Write([]byte("relay\x00" + token + "\x00" + callID))
	return hex.EncodeToString(m.Sum(nil)[:16])
}

// relayed reports whether the request carries a valid relay signature.
func (r *Registrar) relayed(req *proxy.Request) bool {
	sig, ok := req.Msg.Recipient.UriParams.Get(relayParam)
	if !ok || sig == "" || len(r.tokenKey) == 0 {
		return false
	}
	want := r.relaySig(req.Msg.Recipient.User, req.Msg.CallID().Value())
	return hmac.Equal([]byte(sig), []byte(want))
}

// RelayTarget is where a request for binding b goes when b's flow belongs
// to another node: that node's SIP address, with b's contact token and a
// relay signature bound to the Call-ID in the Request-URI.
func (r *Registrar) RelayTarget(b store.Binding, callID string) (proxy.Target, error) {
	if b.Flow.NodeURI == "" {
		return proxy.Target{}, errors.New("registrar: binding has no owning node address")
	}
	var u sip.Uri
	if err := sip.ParseUri(b.Flow.NodeURI, &u); err != nil {
		return proxy.Target{}, fmt.Errorf("registrar: owning node address: %w", err)
	}
	u.User = b.Token
	if u.UriParams == nil {
		u.UriParams = sip.NewParams()
	}
	u.UriParams.Add(relayParam, r.relaySig(b.Token, callID))
	t := proxy.URITarget(&u)
	t.URI = &u
	t.Relay = true
	return t, nil
}

// OwnedElsewhere reports whether b's flow is a connection another node
// holds (a request for it must go through that node).
func (r *Registrar) OwnedElsewhere(b store.Binding) bool {
	switch b.Transport {
	case "tcp", "tls", "ws", "wss":
	default:
		return false
	}
	return b.Flow.Node != "" && b.Flow.Node != r.cfg.NodeID && b.Flow.NodeURI != ""
}

// TargetFor is where a request for binding b goes: the device's contact,
// over the flow it registered from.
func TargetFor(b store.Binding) (proxy.Target, error) {
	var u sip.Uri
	if err := sip.ParseUri(b.Contact, &u); err != nil {
		return proxy.Target{}, err
	}
	return proxy.Target{URI: &u, Dest: b.Source, Transport: b.Transport, Flow: true, Device: true}, nil
}

// resolveContact turns a request for a sipwake contact into a request for
// the device behind it. It answers and returns false when it cannot.
func (r *Registrar) resolveContact(ctx context.Context, req *proxy.Request, relayed bool) (store.Binding, string, bool) {
	if !req.Trusted && !relayed {
		req.Log().Info("request refused", zap.String("reason", "untrusted source towards a device"))
		req.Respond(403, "Forbidden")
		return store.Binding{}, "", false
	}
	var aor string
	b, err := r.store.BindingByToken(ctx, req.Msg.Recipient.User)
	if errors.Is(err, store.ErrNotFound) && !relayed {
		aor, b, err = r.resolveShared(ctx, req.Msg.Recipient.User)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		req.Respond(404, "Not Found")
		return b, "", false
	case err != nil:
		req.Log().Warn("binding lookup failed", zap.Error(err))
		req.Respond(503, "Service Unavailable", sip.NewHeader("Retry-After", "5"))
		return b, "", false
	}
	var t proxy.Target
	switch {
	case relayed && r.OwnedElsewhere(b):
		// Relayed to us, but the device has moved on: no ping-pong.
		req.Respond(480, "Temporarily Unavailable", sip.NewHeader("Warning", `399 sipwake "device connection moved"`))
		return b, "", false
	case r.OwnedElsewhere(b):
		t, err = r.RelayTarget(b, req.Msg.CallID().Value())
	default:
		t, err = TargetFor(b)
	}
	if err != nil {
		req.Log().Warn("stored contact unusable", proxy.AOR(b.AOR), zap.Error(err))
		req.Respond(480, "Temporarily Unavailable")
		return b, "", false
	}
	req.Target = &t
	return b, aor, true
}

// resolveShared resolves a contact shared by every device of an AOR
// (per-AOR upstream contacts): the AOR, and its device seen last as the
// target of requests that go to one device only.
func (r *Registrar) resolveShared(ctx context.Context, token string) (string, store.Binding, error) {
	reg, err := r.store.Registration(ctx, token)
	if err != nil {
		return "", store.Binding{}, err
	}
	if reg.Instance != "" {
		return "", store.Binding{}, store.ErrNotFound
	}
	bs, err := r.store.Bindings(ctx, reg.AOR)
	if err != nil {
		return "", store.Binding{}, err
	}
	if len(bs) == 0 {
		return "", store.Binding{}, store.ErrNotFound
	}
	return reg.AOR, bs[len(bs)-1], nil
}

// regState is what one REGISTER transaction needs to remember between the
// request and the PBX's answer.
type regState struct {
	aor       string
	contact   *sip.ContactHeader // the device's Contact as sent
	clean     sip.Uri            // device contact without push parameters
	push      *store.PushTarget
	query     bool
	identity  string
	token     string
	requested time.Duration
	star      bool
	pnsreg    bool // the device asked for +sip.pnsreg (RFC 8599 §4.1.1)
	// upToken is the user part of the contact at the PBX: the binding
	// token, or the AOR's with per-AOR contacts.
	upToken string
	// contactTP is the transport the contact at the PBX was made for.
	contactTP string
	// keepShared: a per-AOR device leaving while other devices stay; the
	// shared contact is refreshed (authenticating the device) instead of
	// removed.
	keepShared bool
	// upExpires overrides the expiry asked of the PBX (keepShared).
	upExpires time.Duration
}

// register relays a device REGISTER to the PBX (pass-through mode).
func (r *Registrar) register(ctx context.Context, req *proxy.Request) {
	start := time.Now()
	t, ok := req.Server().UpstreamTarget()
	if !ok {
		r.metrics.result("error")
		req.Respond(503, "Service Unavailable", sip.NewHeader("Warning", `399 sipwake "no upstream registrar configured"`))
		return
	}
	if !req.Server().ServesDomain(req.Msg.Recipient.Host) {
		r.metrics.result("rejected")
		req.Log().Info("register refused", zap.String("reason", "domain not served"), zap.String(proxy.FieldDst, req.Msg.Recipient.Host))
		req.Respond(403, "Forbidden (domain not served here)")
		return
	}
	st, code, reason := r.parseRegister(req)
	if code != 0 {
		r.metrics.result(resultFor(code))
		hdrs := []sip.Header{}
		if code == 555 || st.query {
			hdrs = append(hdrs, sip.NewHeader("Feature-Caps", FeatureCaps(SupportedProviders(), 0)))
		}
		if code == 423 {
			hdrs = append(hdrs, sip.NewHeader("Min-Expires", strconv.Itoa(int(r.cfg.MinExpires.Seconds()))))
		}
		req.Log().Info("register refused", proxy.AOR(st.aor), proxy.Status(code), zap.String("reason", reason))
		req.Respond(code, reason, hdrs...)
		return
	}
	if r.cfg.UpstreamContacts == PerAOR && st.contact != nil {
		if done := r.sharedContact(ctx, req, st, start); done {
			return
		}
	}
	req.Forward(ctx, proxy.ForwardOptions{
		Target:        t,
		NoRecordRoute: true,
		Prepare:       func(out *sip.Request) error { return r.prepareUpstream(req, out, st, t) },
		OnResponse:    func(res *sip.Response) *sip.Response { return r.onResponse(ctx, req, st, res, start) },
	})
}

// parseRegister validates the REGISTER and works out the binding it
// concerns. A non-zero code is the answer to send instead of forwarding.
func (r *Registrar) parseRegister(req *proxy.Request) (*regState, int, string) {
	st := &regState{}
	aor, err := NormalizeAOR(req.Msg.To().Address)
	if err != nil {
		code, reason := StatusFor(err)
		return st, code, reason
	}
	st.aor = aor
	contacts := proxy.HeadersNamed(req.Msg, "Contact")
	switch {
	case len(contacts) == 0:
		return st, 0, "" // a query: relayed, answer translated
	case len(contacts) > 1:
		return st, 400, "Bad Request (one Contact per REGISTER)"
	}
	c, ok := contacts[0].(*sip.ContactHeader)
	if !ok {
		return st, 400, "Bad Request (Contact)"
	}
	if c.Address.Wildcard || c.Address.Host == "*" || strings.TrimSpace(c.Value()) == "*" {
		if exp := proxy.FirstHeader(req.Msg, "Expires"); exp == nil || strings.TrimSpace(exp.Value()) != "0" {
			return st, 400, "Bad Request (Contact * needs Expires: 0)"
		}
		st.star = true
		return st, 0, ""
	}
	switch strings.ToLower(c.Address.Scheme) {
	case "sip", "sips":
	default:
		return st, 400, "Bad Request (contact scheme)"
	}
	st.contact = c
	st.requested = r.cfg.DefaultExpires
	if v, ok := c.Params.Get("expires"); ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			return st, 400, "Bad Request (expires)"
		}
		st.requested = time.Duration(n) * time.Second
	} else if h := proxy.FirstHeader(req.Msg, "Expires"); h != nil {
		n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
		if err != nil {
			return st, 400, "Bad Request (Expires)"
		}
		st.requested = time.Duration(n) * time.Second
	}
	if st.requested > 0 && st.requested < r.cfg.MinExpires {
		return st, 423, "Interval Too Brief"
	}
	if st.requested > r.cfg.MaxExpires {
		st.requested = r.cfg.MaxExpires
	}

	push, query, err := ParsePush(c.Address.UriParams, c.Params)
	if err != nil {
		// RFC 8599 §4.1.2: a UA removing its binding may drop pn-prid
		// and keep the other push parameters.
		if !(st.requested == 0 && errors.Is(err, ErrMissingPRID)) {
			code, reason := StatusFor(err)
			return st, code, reason
		}
		push, query = nil, false
	}
	st.push, st.query = push, query
	st.pnsreg = HasPNSReg(c.Params)
	st.clean = *c.Address.Clone()
	st.clean.UriParams = StripPush(st.clean.UriParams)
	st.clean.Headers = nil

	st.identity = DeviceIdentity(headerParam(c.Params, "+sip.instance"), push, st.clean)
	st.token = r.tokens.token(aor, st.identity)
	st.upToken = st.token
	if r.cfg.UpstreamContacts == PerAOR {
		st.upToken = r.sharedToken(aor)
	}
	return st, 0, ""
}

// prepareUpstream turns the relayed copy into what the PBX may see: our
// contact instead of the device's, no push parameter, a Path, Feature-Caps.
func (r *Registrar) prepareUpstream(req *proxy.Request, out *sip.Request, st *regState, up proxy.Target) error {
	srv := req.Server()
	// Only sipwake's own REGISTERs may carry the on-behalf mark a PBX
	// trusting sipwake relies on.
	for out.RemoveHeader(OnBehalfHeader) {
	}
	if st.contact != nil {
		// The PBX reaches us over the transport of its own leg, else
		// over the one the device used.
		st.contactTP = up.Transport
		u, err := srv.ContactURI(up.Transport, st.upToken)
		if err != nil {
			st.contactTP = req.Transport
			if u, err = srv.ContactURI(req.Transport, st.upToken); err != nil {
				return err
			}
		}
		params := sip.NewParams()
		for _, kv := range st.contact.Params {
			switch strings.ToLower(kv.K) {
			case "q":
				params.Add(kv.K, kv.V)
			case "+sip.instance":
				if r.cfg.UpstreamContacts != PerAOR {
					params.Add(kv.K, kv.V)
				}
			}
		}
		// The expiry asked for, clamped to registrar.max_expires; the PBX
		// may grant less, and that is what the device is told (in
		// on-behalf mode, the device is told what it asked for).
		ask := st.requested
		if st.keepShared {
			ask = st.upExpires
		}
		params.Add("expires", strconv.Itoa(int(ask.Seconds())))
		for out.RemoveHeader("Contact") {
		}
		out.AppendHeader(&sip.ContactHeader{Address: u, Params: params})
		out.RemoveHeader("Expires")
	}
	if r.cfg.Path {
		if p, err := srv.PathValue(up.Transport); err == nil {
			out.PrependHeader(sip.NewHeader("Path", p))
		}
	}
	if st.push != nil {
		out.AppendHeader(sip.NewHeader("Feature-Caps", FeatureCaps([]string{st.push.Provider}, 0)))
	}
	return nil
}

// onResponse stores the binding when the PBX accepted the REGISTER and
// gives the device back its own Contact.
func (r *Registrar) onResponse(ctx context.Context, req *proxy.Request, st *regState, res *sip.Response, start time.Time) *sip.Response {
	if !res.IsSuccess() {
		if res.StatusCode >= 200 {
			switch res.StatusCode {
			case 401, 407:
				r.metrics.result("challenged")
			default:
				r.metrics.result("rejected")
			}
		}
		return res
	}
	switch {
	case st.star:
		n, err := r.store.DeleteAOR(ctx, st.aor)
		if err != nil {
			req.Log().Warn("bindings not removed", proxy.AOR(st.aor), zap.Error(err))
		}
		r.forgetAOR(ctx, st.aor)
		r.metrics.result("removed")
		req.Log().Info("bindings removed", proxy.AOR(st.aor), zap.Int("count", n))
		return r.translateContacts(ctx, st, res, 0)
	case st.contact == nil:
		r.metrics.result("query")
		return r.translateContacts(ctx, st, res, 0)
	}
	granted := r.grantedExpiry(res, st)
	if granted <= 0 || st.keepShared {
		if err := r.store.DeleteBinding(ctx, st.aor, st.identity); err != nil && !errors.Is(err, store.ErrNotFound) {
			req.Log().Warn("binding not removed", proxy.AOR(st.aor), zap.Error(err))
		}
		if !st.keepShared {
			r.forget(ctx, st.upToken)
		}
		r.metrics.result("removed")
		req.Log().Info("binding removed", proxy.AOR(st.aor), zap.String(proxy.FieldInstance, maskIdentity(st.identity)))
		return r.translateContacts(ctx, st, res, -1)
	}
	now := time.Now()
	// On-behalf: the device keeps the expiry it asked for and sipwake
	// keeps the PBX registration alive meanwhile.
	onBehalf := r.cfg.Mode == ModeOnBehalf && st.push != nil && r.canKeep(ctx, st.aor, req)
	deviceExp := granted
	if onBehalf && st.requested > granted {
		deviceExp = st.requested
	}
	instance := headerParam(st.contact.Params, "+sip.instance")
	regID, _ := strconv.Atoi(headerParam(st.contact.Params, "reg-id"))
	b := store.Binding{
		AOR:         st.aor,
		Instance:    st.identity,
		SIPInstance: strings.Trim(instance, `"<>`),
		RegID:       regID,
		Contact:     st.clean.String(),
		Source:      req.Source,
		Transport:   strings.ToLower(req.Transport),
		Flow:        store.Flow{Node: r.cfg.NodeID, Conn: req.Source, NodeURI: r.nodeURI(req.Server())},
		Push:        st.push,
		Token:       st.token,
		Expires:     now.Add(deviceExp),
		Upstream:    store.Upstream{CallID: req.Msg.CallID().Value(), CSeq: req.Msg.CSeq().SeqNo, Expires: now.Add(granted)},
		UserAgent:   headerValue(req.Msg, "User-Agent"),
		LastSeen:    now,
		RefreshPush: st.push != nil && (st.pnsreg || st.push.Legacy[ParamType] != ""),
	}
	if _, err := r.store.PutBinding(ctx, b, r.cfg.MaxBindingsPerAOR); err != nil {
		req.Log().Warn("binding not stored", proxy.AOR(st.aor), zap.Error(err))
		result, code, reason := "error", 500, "Server Internal Error"
		if errors.Is(err, store.ErrTooManyBindings) {
			result = "too_many_bindings"
			// Checked atomically here rather than before relaying, which
			// would cost a store round trip per REGISTER: the PBX keeps
			// the contact until it expires, and requests to it get 404.
			code, reason = 403, "Forbidden (too many devices registered)"
		}
		r.metrics.result(result)
		return sip.NewResponseFromRequest(req.Msg, code, reason, nil)
	}
	r.metrics.result("ok")
	r.keep(ctx, st, &b, granted, onBehalf, req)
	if ce := req.Check(zap.InfoLevel, "binding stored"); ce != nil {
		fields := []zap.Field{proxy.AOR(st.aor), zap.String(proxy.FieldInstance, maskIdentity(st.identity)),
			zap.Float64("expires", deviceExp.Seconds()), zap.Float64(proxy.FieldDuration, time.Since(start).Seconds())}
		if onBehalf {
			fields = append(fields, zap.Float64("upstream_expires", granted.Seconds()))
		}
		if st.push != nil {
			fields = append(fields, zap.String(proxy.FieldPNProvider, st.push.Provider), proxy.PNToken(st.push.Token))
		}
		ce.Write(fields...)
	}
	out := r.translateContacts(ctx, st, res, deviceExp)
	caps := FeatureCaps(SupportedProviders(), 0)
	if st.push != nil {
		var refresh time.Duration
		if st.pnsreg {
			refresh = r.margin(deviceExp)
		}
		caps = FeatureCaps([]string{st.push.Provider}, refresh)
	}
	out.AppendHeader(sip.NewHeader("Feature-Caps", caps))
	return out
}

// nodeURI is how other nodes reach this one: its UDP address, else TCP.
// The listeners do not change once serving, so it is worked out once.
func (r *Registrar) nodeURI(srv *proxy.Server) string {
	r.nodeURIOnce.Do(func() {
		for _, tp := range []string{"udp", "tcp"} {
			u, err := srv.ContactURI(tp, "")
			if err != nil {
				continue
			}
			if a := r.cfg.NodeAddress; a != "" {
				host, port, err := net.SplitHostPort(a)
				if err != nil {
					host, port = strings.Trim(a, "[]"), strconv.Itoa(u.Port)
				}
				u.Host = host
				u.Port, _ = strconv.Atoi(port)
			}
			r.nodeURIText = u.String()
			return
		}
	})
	return r.nodeURIText
}

// grantedExpiry reads the expiry the PBX granted to our contact; 0 when
// the PBX did not list it (it is not registered there).
func (r *Registrar) grantedExpiry(res *sip.Response, st *regState) time.Duration {
	return r.grantedFor(res, st.upToken, st.requested)
}

// translateContacts replaces, in place, sipwake contacts in a REGISTER 2xx
// by the devices' own contacts, so a device never learns other devices' tokens
// and sees its own Contact as it sent it. own > 0 is the expiry to show
// on the device's own contact (on-behalf mode), own < 0 leaves it out (a
// device that left a shared contact).
func (r *Registrar) translateContacts(ctx context.Context, st *regState, res *sip.Response, own time.Duration) *sip.Response {
	hs := proxy.HeadersNamed(res, "Contact")
	if len(hs) == 0 {
		return res
	}
	var byToken map[string]store.Binding
	// res is already the relay's private copy of the PBX's response.
	out := res
	for out.RemoveHeader("Contact") {
	}
	for _, h := range hs {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			out.AppendHeader(h)
			continue
		}
		if st.contact != nil && c.Address.User == st.upToken {
			if own < 0 {
				continue
			}
			mine := st.contact.Clone()
			if own > 0 {
				mine.Params.Add("expires", strconv.Itoa(int(own.Seconds())))
			} else if v, ok := c.Params.Get("expires"); ok {
				mine.Params.Add("expires", v)
			}
			out.AppendHeader(mine)
			continue
		}
		if byToken == nil {
			byToken = map[string]store.Binding{}
			if bs, err := r.store.Bindings(ctx, st.aor); err == nil {
				for _, b := range bs {
					byToken[b.Token] = b
				}
			}
		}
		if b, ok := byToken[c.Address.User]; ok && c.Address.User != "" {
			var u sip.Uri
			if err := sip.ParseUri(b.Contact, &u); err == nil {
				p := sip.NewParams()
				if v, ok := c.Params.Get("expires"); ok {
					p.Add("expires", v)
				}
				out.AppendHeader(&sip.ContactHeader{Address: u, Params: p})
				continue
			}
		}
		out.AppendHeader(c)
	}
	return out
}

// headerParam reads a header parameter by name, ignoring case and the
// whitespace sipgo may leave around names.
func headerParam(p sip.HeaderParams, name string) string {
	for _, kv := range p {
		if strings.EqualFold(strings.TrimSpace(kv.K), name) {
			return strings.TrimSpace(kv.V)
		}
	}
	return ""
}

func headerValue(m *sip.Request, name string) string {
	if h := proxy.FirstHeader(m, name); h != nil {
		return h.Value()
	}
	return ""
}

// maskIdentity keeps device identities that embed a push token out of the
// logs in full.
func maskIdentity(id string) string {
	if strings.HasPrefix(id, "contact:") || strings.HasPrefix(id, "urn:") || strings.HasPrefix(id, "<urn:") {
		return id
	}
	return proxy.Mask(id)
}

func resultFor(code int) string {
	switch code {
	case 555:
		return "unsupported_provider"
	case 423:
		return "interval_too_brief"
	case 400:
		return "bad_request"
	}
	return "error"
}
