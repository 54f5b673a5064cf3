package registrar

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/push"
	"github.com/sipwake/sipwake/store"
)

// The keeper works through the store's schedule of Registration records:
// every node claims what falls due (a lease keeps two nodes off the same
// record) and, per record, refreshes the PBX registration (on-behalf
// mode), sends the device a refresh push, or ends it.
const (
	// claimEvery is how often the schedule is polled.
	claimEvery = 100 * time.Millisecond
	// claimLimit caps one claim; a full claim is followed by another at
	// once.
	claimLimit = 512
	// claimLease keeps a claimed record off other nodes' claims while this
	// one works on it (two REGISTER round trips at most).
	claimLease = 30 * time.Second
	// sendTimeout bounds one REGISTER transaction of the keeper.
	sendTimeout = 8 * time.Second
	// maxBackoff caps the wait after transient failures.
	maxBackoff = 5 * time.Minute
	// askExpires caps the expiry sipwake asks the PBX for.
	askExpires = time.Hour
)

// OnBehalfHeader marks the REGISTERs sipwake sends on its own behalf, so
// that a PBX trusting sipwake's address can trust these and still
// challenge the devices' REGISTERs sipwake relays (it is removed from
// those).
const OnBehalfHeader = "X-Sipwake-On-Behalf"

// Refresh results (sipwake_registrar_upstream_refreshes_total{result}).
const (
	refreshOK           = "ok"
	refreshAuthFailed   = "auth_failed"
	refreshTimeout      = "timeout"
	refreshRejected     = "rejected"
	refreshDeregistered = "deregistered"
)

type keeper struct {
	sem    chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc
	done   chan struct{}
}

// startKeeper starts the schedule loop when there is something to keep.
func (r *Registrar) startKeeper() {
	if r.cfg.Server == nil || (r.cfg.Mode != ModeOnBehalf && !r.cfg.RefreshPush) {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.keeper = &keeper{sem: make(chan struct{}, r.cfg.OnBehalf.Concurrency), cancel: cancel, done: make(chan struct{})}
	go r.runKeeper(ctx)
}

// stopKeeper stops the loop and waits for the records in hand.
func (r *Registrar) stopKeeper() {
	k := r.keeper
	if k == nil {
		return
	}
	k.cancel()
	<-k.done
	k.wg.Wait()
}

func (r *Registrar) runKeeper(ctx context.Context) {
	k := r.keeper
	defer close(k.done)
	t := time.NewTicker(claimEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for {
			regs, err := r.store.ClaimDue(ctx, time.Now(), claimLease, claimLimit)
			if err != nil {
				if ctx.Err() == nil {
					r.log.Warn("registrations not claimed", zap.Error(err))
				}
				break
			}
			for _, reg := range regs {
				select {
				case k.sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				k.wg.Add(1)
				go func(reg store.Registration) {
					defer func() { <-k.sem; k.wg.Done() }()
					r.work(ctx, reg)
				}(reg)
			}
			if len(regs) < claimLimit {
				break
			}
		}
	}
}

// work does what fell due for one record and writes it back.
func (r *Registrar) work(ctx context.Context, reg store.Registration) {
	now := time.Now()
	bs, err := r.devicesOf(ctx, reg)
	if err != nil {
		// The store is failing: try again shortly, the lease has it.
		r.log.Warn("registration not worked", proxy.AOR(reg.AOR), zap.Error(err))
		return
	}
	if reason := r.ended(&reg, bs, now); reason != "" {
		r.end(ctx, reg, reason)
		return
	}
	refreshed := false
	if reg.OnBehalf && reg.State != store.RegNeedsLogin && !reg.RefreshAt.IsZero() && !now.Before(reg.RefreshAt) {
		refreshed = r.refresh(ctx, &reg, bs)
	}
	if r.cfg.RefreshPush {
		r.refreshPush(&reg, bs, time.Now())
	}
	reg.Due = r.nextDue(reg)
	if gone := r.save(ctx, reg); gone && refreshed {
		r.withdraw(ctx, reg)
	}
}

// devicesOf returns the live bindings a record serves: its device, or
// every device of the AOR for a shared contact.
func (r *Registrar) devicesOf(ctx context.Context, reg store.Registration) ([]store.Binding, error) {
	if reg.Instance == "" {
		return r.store.Bindings(ctx, reg.AOR)
	}
	b, err := r.store.BindingByToken(ctx, reg.Token)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return []store.Binding{b}, nil
}

// ended says why a record is over ("" when it is not): its devices are
// gone or expired, silent for registrar.inactivity_timeout, or (on-behalf)
// no longer reachable by push.
func (r *Registrar) ended(reg *store.Registration, bs []store.Binding, now time.Time) string {
	if reg.OnBehalf && r.cfg.InactivityTimeout > 0 && !now.Before(reg.LastSeen.Add(r.cfg.InactivityTimeout)) {
		return "inactivity"
	}
	if len(bs) == 0 {
		if now.Before(reg.DeviceExpires) {
			return "removed"
		}
		return "expired"
	}
	if reg.Instance == "" {
		// A shared contact lives as long as the last of its devices.
		var exp time.Time
		for _, b := range bs {
			if b.Expires.After(exp) {
				exp = b.Expires
			}
		}
		reg.DeviceExpires = exp
	}
	if !now.Before(reg.DeviceExpires) {
		return "expired"
	}
	if reg.OnBehalf && reg.Instance != "" && bs[0].Push == nil {
		// Its push token was found dead: kept registered, it could only
		// be called while awake, which it then refreshes by itself.
		return "no_push"
	}
	return ""
}

// end finishes a record: the PBX registration is removed with a
// de-REGISTER of sipwake's own (on-behalf), the bindings too after
// inactivity, and the record is deleted.
func (r *Registrar) end(ctx context.Context, reg store.Registration, reason string) {
	log := r.log.With(proxy.AOR(reg.AOR), zap.String("reason", reason))
	if reg.OnBehalf {
		r.deregister(ctx, &reg, log)
	}
	if reason == "inactivity" {
		var err error
		if reg.Instance == "" {
			_, err = r.store.DeleteAOR(ctx, reg.AOR)
		} else {
			err = r.store.DeleteBinding(ctx, reg.AOR, reg.Instance)
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			log.Warn("binding not removed", zap.Error(err))
		}
		if r.cfg.OnBehalf.WipeOnInactivity {
			r.wipeAccount(ctx, reg.AOR, reason)
		}
	}
	if err := r.store.DeleteRegistration(ctx, reg.Token); err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Warn("registration not removed", zap.Error(err))
	}
	log.Info("upstream registration ended", zap.Bool("on_behalf", reg.OnBehalf))
}

// deregister removes the record's contact at the PBX with sipwake's own
// REGISTER (expires 0), and counts and logs the outcome.
func (r *Registrar) deregister(ctx context.Context, reg *store.Registration, log *zap.Logger) {
	cctx, cancel := context.WithTimeout(ctx, 2*sendTimeout)
	res, err := r.sendRegister(cctx, reg, 0)
	cancel()
	switch {
	case err != nil:
		log.Warn("upstream de-registration failed", zap.Error(err))
		r.metrics.refresh(refreshTimeout)
	case !res.IsSuccess():
		log.Warn("upstream de-registration refused", proxy.Status(int(res.StatusCode)))
		r.metrics.refresh(refreshRejected)
	default:
		r.metrics.refresh(refreshDeregistered)
	}
}

// withdraw undoes a refresh that crossed the end of its record: the
// device de-registered (or its record was ended) while sipwake's REGISTER
// was on its way, and a PBX that handled the device's removal first holds
// the contact again, for a whole refresh grant. Unless a device is back
// for the record, the contact is removed with sipwake's own de-REGISTER.
// A device that registers again while that de-REGISTER is on its way may
// lose its contact at the PBX (its REGISTER handled first): when its
// binding is found afterwards, the contact is registered again at once.
// Left open: a device whose binding is written only after that last look
// (a few milliseconds) waits for its next refresh.
func (r *Registrar) withdraw(ctx context.Context, reg store.Registration) {
	log := r.log.With(proxy.AOR(reg.AOR), zap.String("reason", "removed_during_refresh"))
	if bs, err := r.devicesOf(ctx, reg); err != nil || len(bs) > 0 {
		// A device is back and its own REGISTER decides; or the store
		// fails and nothing can be told: the contact expires with the
		// grant.
		return
	}
	r.deregister(ctx, &reg, log)
	bs, err := r.devicesOf(ctx, reg)
	if err != nil || len(bs) == 0 {
		log.Info("upstream registration ended", zap.Bool("on_behalf", true))
		return
	}
	var last time.Time
	for _, b := range bs {
		last = maxTime(last, b.Expires)
	}
	ask := r.askUntil(last)
	cctx, cancel := context.WithTimeout(ctx, 2*sendTimeout)
	res, err := r.sendRegister(cctx, &reg, ask)
	cancel()
	switch {
	case err != nil:
		log.Warn("upstream registration missing until the device registers again", zap.Error(err))
	case !res.IsSuccess():
		log.Warn("upstream registration missing until the device registers again", proxy.Status(int(res.StatusCode)))
	default:
		r.metrics.refresh(refreshOK)
		log.Info("upstream registration resumed")
	}
}

// wipeAccount deletes an AOR's stored credentials.
func (r *Registrar) wipeAccount(ctx context.Context, aor, reason string) {
	err := r.store.DeleteAccount(ctx, aor)
	switch {
	case err == nil:
		r.log.Info("credentials wiped", proxy.AOR(aor), zap.String("reason", reason))
	case !errors.Is(err, store.ErrNotFound):
		r.log.Warn("credentials not wiped", proxy.AOR(aor), zap.Error(err))
	}
}

// refresh sends the on-behalf REGISTER and records the outcome; it
// reports whether the PBX may now hold the contact (it granted it, or the
// answer never came).
func (r *Registrar) refresh(ctx context.Context, reg *store.Registration, bs []store.Binding) bool {
	log := r.log.WithLazy(proxy.AOR(reg.AOR))
	ask := r.askUntil(reg.DeviceExpires)
	cctx, cancel := context.WithTimeout(ctx, 2*sendTimeout)
	res, err := r.sendRegister(cctx, reg, ask)
	cancel()
	now := time.Now()
	prev := reg.State
	switch {
	case err != nil && errors.Is(err, errNoCredentials):
		r.authFailed(ctx, reg, bs, log, err)
	case err != nil:
		r.metrics.refresh(refreshTimeout)
		r.backOff(reg, 0, now)
		if prev != store.RegBackingOff {
			log.Warn("upstream registration backing off", zap.Error(err), zap.Time("retry_at", reg.RefreshAt))
		}
		return true
	case res.IsSuccess():
		granted := r.grantedFor(res, reg.Token, ask)
		if granted <= 0 {
			r.metrics.refresh(refreshRejected)
			r.backOff(reg, 0, now)
			log.Warn("upstream registration not kept by the pbx", proxy.Status(int(res.StatusCode)))
			return true // it may hold the contact under another form
		}
		r.metrics.refresh(refreshOK)
		reg.Expires, reg.Granted = now.Add(granted), granted
		reg.Failures, reg.AuthFailures, reg.State = 0, 0, store.RegActive
		reg.RefreshAt = now.Add(refreshInterval(granted))
		if prev != store.RegActive {
			log.Info("upstream registration active", zap.Float64("expires", granted.Seconds()))
		}
		return true
	case res.StatusCode == 401 || res.StatusCode == 403 || res.StatusCode == 407:
		r.authFailed(ctx, reg, bs, log, errors.New("registrar: pbx answered "+strconv.Itoa(int(res.StatusCode))))
	default:
		r.metrics.refresh(refreshRejected)
		r.backOff(reg, retryAfter(res), now)
		if prev != store.RegBackingOff {
			log.Warn("upstream registration backing off", proxy.Status(int(res.StatusCode)), zap.Time("retry_at", reg.RefreshAt))
		}
	}
	return false
}

// askUntil is the expiry sipwake asks the PBX for on behalf of devices
// registered until t: the time left, at most askExpires, at least
// registrar.min_expires.
func (r *Registrar) askUntil(t time.Time) time.Duration {
	return min(askExpires, max(r.cfg.MinExpires, time.Until(t).Truncate(time.Second)))
}

// backOff schedules the next try after a transient failure: exponential
// from 2 s to 5 min with jitter (half to all of it), never before the
// PBX's Retry-After, plus up to a quarter of it so that refreshes a PBX
// restart turned away come back spread out.
func (r *Registrar) backOff(reg *store.Registration, ra time.Duration, now time.Time) {
	reg.Failures++
	reg.State = store.RegBackingOff
	d := 2 * time.Second << min(reg.Failures-1, 10)
	if d > maxBackoff {
		d = maxBackoff
	}
	d = d/2 + rand.N(d/2+1)
	if ra > 0 {
		d = ra + rand.N(ra/4+1)
	}
	reg.RefreshAt = now.Add(d)
}

// authFailed counts a refusal of sipwake's credentials; at
// registrar.on_behalf.max_auth_failures in a row the record needs the
// app's own login: nothing more is sent, the device gets one alert push.
func (r *Registrar) authFailed(ctx context.Context, reg *store.Registration, bs []store.Binding, log *zap.Logger, cause error) {
	r.metrics.refresh(refreshAuthFailed)
	reg.Failures++
	reg.AuthFailures++
	if reg.AuthFailures < r.cfg.OnBehalf.MaxAuthFailures {
		d := 5 * time.Second << min(reg.AuthFailures-1, 6)
		reg.RefreshAt = time.Now().Add(d/2 + rand.N(d/2+1))
		log.Info("upstream registration refused", zap.Int("failures", reg.AuthFailures), zap.Error(cause))
		return
	}
	reg.State = store.RegNeedsLogin
	reg.RefreshAt = time.Time{}
	log.Warn("upstream registration needs login", zap.Int("failures", reg.AuthFailures), zap.Error(cause))
	for i := range bs {
		r.sendLoginPush(&bs[i])
	}
	if r.cfg.OnBehalf.WipeOnAuthFailure {
		r.wipeAccount(ctx, reg.AOR, "auth_failure")
	}
}

// refreshPush sends the device a register push when its registration
// nears expiry, at most once per registrar.refresh_push_interval.
func (r *Registrar) refreshPush(reg *store.Registration, bs []store.Binding, now time.Time) {
	at := r.pushAt(*reg)
	if at.IsZero() || now.Before(at) {
		return
	}
	sent := false
	for i := range bs {
		b := &bs[i]
		if b.Push == nil || !b.RefreshPush || !now.Before(b.Expires) || now.Before(b.Expires.Add(-r.margin(b.Expires.Sub(b.LastSeen)))) {
			continue
		}
		n := r.registerPush(b)
		if n == nil {
			continue
		}
		sent = true
		log := r.log.With(proxy.AOR(b.AOR), zap.String(proxy.FieldPNProvider, b.Push.Provider), proxy.PNToken(b.Push.Token))
		if err := r.cfg.Pusher.Send(n, func(_ push.Result, err error) {
			if err != nil {
				log.Info("refresh push failed", zap.Error(err))
				return
			}
			log.Debug("refresh push sent")
		}); err != nil {
			log.Info("refresh push not queued", zap.Error(err))
		}
	}
	if sent {
		reg.LastPush = now
	}
}

// pushAt is when the next refresh push may go: the margin before the
// device's expiry, not sooner than the interval after the last one.
func (r *Registrar) pushAt(reg store.Registration) time.Time {
	if !r.cfg.RefreshPush || r.cfg.Pusher == nil || reg.DeviceExpires.IsZero() {
		return time.Time{}
	}
	at := reg.DeviceExpires.Add(-r.margin(reg.DeviceExpires.Sub(reg.LastSeen)))
	if !reg.LastPush.IsZero() {
		if next := reg.LastPush.Add(r.cfg.RefreshPushInterval); next.After(at) {
			at = next
		}
	}
	if !at.Before(reg.DeviceExpires) {
		return time.Time{}
	}
	return at
}

// margin is how long before a registration of length d lapses the
// refresh push goes (and the +sip.pnsreg value): registrar.refresh_before,
// or a third of a short registration.
func (r *Registrar) margin(d time.Duration) time.Duration {
	m := r.cfg.RefreshBefore
	if d/3 < m {
		m = d / 3
	}
	return m.Truncate(time.Second)
}

// registerPush builds the register push for b: iOS background (or alert,
// registrar.refresh_push_type), never VoIP; a data message elsewhere. Nil
// when the device has no form for it (an iOS device with a VoIP token
// only).
func (r *Registrar) registerPush(b *store.Binding) *push.Notification {
	n := &push.Notification{
		Target:     PushTarget(b.Push),
		Payload:    push.Payload{Event: push.EventRegister, AOR: b.AOR},
		Expiration: b.Expires,
		CollapseID: "register-" + b.Token,
	}
	switch {
	case IsAPNs(b.Push):
		if !Accepts(b.Push, PushTypeRemote) {
			return nil
		}
		n.Type = push.TypeBackground
		if r.cfg.RefreshPushType == "alert" {
			n.Type = push.TypeAlert
			n.Alert = &push.Alert{Title: "Staying reachable", Body: "Open the app to keep receiving calls"}
		}
	default:
		n.Type = push.TypeData
	}
	return n
}

// sendLoginPush tells a device that sipwake can no longer keep it
// registered: the user must sign in in the app.
func (r *Registrar) sendLoginPush(b *store.Binding) {
	if b.Push == nil || r.cfg.Pusher == nil {
		return
	}
	n := &push.Notification{
		Target:     PushTarget(b.Push),
		Payload:    push.Payload{Event: push.EventLoginRequired, AOR: b.AOR},
		CollapseID: "login-" + b.Token,
	}
	switch {
	case IsAPNs(b.Push):
		if !Accepts(b.Push, PushTypeRemote) {
			return
		}
		n.Type = push.TypeAlert
		n.Alert = &push.Alert{Title: "Sign-in needed", Body: "Open the app and sign in again to keep receiving calls"}
	default:
		n.Type = push.TypeData
	}
	log := r.log.With(proxy.AOR(b.AOR), zap.String(proxy.FieldPNProvider, b.Push.Provider), proxy.PNToken(b.Push.Token))
	if err := r.cfg.Pusher.Send(n, func(_ push.Result, err error) {
		if err != nil {
			log.Info("login push failed", zap.Error(err))
			return
		}
		log.Info("login push sent")
	}); err != nil {
		log.Info("login push not queued", zap.Error(err))
	}
}

// nextDue is the earliest of what a record waits for.
func (r *Registrar) nextDue(reg store.Registration) time.Time {
	due := reg.DeviceExpires
	earlier := func(t time.Time) {
		if !t.IsZero() && t.Before(due) {
			due = t
		}
	}
	if reg.OnBehalf {
		if reg.State != store.RegNeedsLogin {
			earlier(reg.RefreshAt)
		}
		if r.cfg.InactivityTimeout > 0 {
			earlier(reg.LastSeen.Add(r.cfg.InactivityTimeout))
		}
	}
	earlier(r.pushAt(reg))
	return due
}

// save writes a worked record back. When the device registered meanwhile
// (a conflict), the fresher record wins; only the CSeq sipwake used is
// carried over, so that the PBX never sees it go backwards. gone reports
// a record deleted meanwhile (the device left, or its record ended).
func (r *Registrar) save(ctx context.Context, reg store.Registration) (gone bool) {
	for range 3 {
		_, err := r.store.PutRegistration(ctx, reg, true)
		if err == nil || !errors.Is(err, store.ErrConflict) {
			if err != nil {
				r.log.Warn("registration not saved", proxy.AOR(reg.AOR), zap.Error(err))
			}
			return false
		}
		cur, err := r.store.Registration(ctx, reg.Token)
		if err != nil {
			return errors.Is(err, store.ErrNotFound) // deleted meanwhile
		}
		if cur.CSeq < reg.CSeq {
			cur.CSeq = reg.CSeq
		}
		if cur.CallID == "" {
			cur.CallID = reg.CallID
		}
		if reg.LastPush.After(cur.LastPush) {
			cur.LastPush = reg.LastPush
		}
		reg = cur
	}
	return false
}

// refreshInterval is when to refresh a registration the PBX granted for
// d: at two thirds of it, give or take 5 %.
func refreshInterval(d time.Duration) time.Duration {
	base := d * 2 / 3
	return base - base/20 + rand.N(base/10+1)
}

// firstRefresh is when to refresh first after the device's own REGISTER:
// anywhere in one whole refresh period (two thirds of the expiry) from a
// twelfth of it on, so that devices that registered together (an app
// update, a network coming back) are spread evenly over the period
// instead of hitting the PBX in step for ever after; the latest leaves a
// quarter of the expiry for a retry.
func firstRefresh(d time.Duration) time.Duration {
	return d/12 + rand.N(d*2/3+1)
}

// errNoCredentials: the PBX challenged and sipwake has nothing to answer
// with (trusted mode, or no account for the realm).
var errNoCredentials = errors.New("registrar: challenged without credentials for the realm")

// sendRegister sends sipwake's own REGISTER for the record's contact
// (expires 0 removes it), answering one challenge with the account's
// credentials. reg.CSeq is advanced for every request sent.
func (r *Registrar) sendRegister(ctx context.Context, reg *store.Registration, expires time.Duration) (*sip.Response, error) {
	srv := r.cfg.Server
	up, ok := srv.UpstreamTarget()
	if !ok {
		return nil, errors.New("registrar: no upstream registrar configured")
	}
	contact, err := srv.ContactURI(reg.Transport, reg.Token)
	if err != nil {
		return nil, err
	}
	_, domain, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(reg.AOR, "sips:"), "sip:"), "@")
	ruri := sip.Uri{Scheme: "sip", Host: domain}
	var aorURI sip.Uri
	if err := sip.ParseUri(reg.AOR, &aorURI); err != nil {
		return nil, err
	}
	if reg.CallID == "" {
		reg.CallID = newCallID()
	}
	build := func(auth sip.Header) *sip.Request {
		reg.CSeq++
		req := sip.NewRequest(sip.REGISTER, ruri)
		from := &sip.FromHeader{Address: aorURI, Params: sip.NewParams()}
		from.Params.Add("tag", strconv.FormatUint(rand.Uint64(), 36))
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: aorURI, Params: sip.NewParams()})
		cid := sip.CallIDHeader(reg.CallID)
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: reg.CSeq, MethodName: sip.REGISTER})
		params := sip.NewParams()
		params.Add("expires", strconv.Itoa(int(expires.Seconds())))
		req.AppendHeader(&sip.ContactHeader{Address: contact, Params: params})
		if r.cfg.Path {
			if p, err := srv.PathValue(up.Transport); err == nil {
				req.AppendHeader(sip.NewHeader("Path", p))
			}
		}
		req.AppendHeader(sip.NewHeader(OnBehalfHeader, "refresh"))
		req.AppendHeader(sip.NewHeader("User-Agent", "sipwake"))
		if auth != nil {
			req.AppendHeader(auth)
		}
		req.SetBody(nil)
		return req
	}
	send := func(req *sip.Request) (*sip.Response, error) {
		sctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		return srv.Send(sctx, req, up)
	}
	res, err := send(build(nil))
	if err != nil {
		return nil, err
	}
	if res.StatusCode == 423 && expires > 0 {
		// Interval Too Brief: ask again for the PBX's Min-Expires.
		if h := proxy.FirstHeader(res, "Min-Expires"); h != nil {
			if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil && n > 0 && time.Duration(n)*time.Second > expires {
				expires = time.Duration(n) * time.Second
				if res, err = send(build(nil)); err != nil {
					return nil, err
				}
			}
		}
	}
	if res.StatusCode != 401 && res.StatusCode != 407 {
		return res, nil
	}
	hname, aname := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		hname, aname = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := proxy.FirstHeader(res, hname)
	if h == nil {
		return res, nil
	}
	ch, err := parseChallenge(h.Value())
	if err != nil {
		return nil, err
	}
	creds, err := r.credentials(ctx, reg.AOR)
	if err != nil {
		return nil, err
	}
	ha1, ok := creds.For(ch.realm, ch.algorithm)
	if !ok {
		return nil, errNoCredentials
	}
	user := creds.Username
	if user == "" {
		user = aorURI.User
	}
	value := ch.authorization(user, ha1, string(sip.REGISTER), ruri.String(), 1, newCnonce())
	return send(build(sip.NewHeader(aname, value)))
}

// credentials opens the AOR's stored account.
func (r *Registrar) credentials(ctx context.Context, aor string) (Credentials, error) {
	a, err := r.store.Account(ctx, aor)
	if errors.Is(err, store.ErrNotFound) {
		return Credentials{}, errNoCredentials
	}
	if err != nil {
		return Credentials{}, err
	}
	c, err := r.cfg.Keyring.Open(a)
	if err != nil {
		r.log.Warn("credentials unusable", proxy.AOR(aor), zap.Error(err))
		return Credentials{}, errNoCredentials
	}
	return c, nil
}

// grantedFor reads the expiry the PBX granted to the contact token.
func (r *Registrar) grantedFor(res *sip.Response, token string, asked time.Duration) time.Duration {
	for _, h := range proxy.HeadersNamed(res, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok || c.Address.User != token {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
				return time.Duration(n) * time.Second
			}
		}
		if h := proxy.FirstHeader(res, "Expires"); h != nil {
			if n, err := strconv.Atoi(strings.TrimSpace(h.Value())); err == nil {
				return time.Duration(n) * time.Second
			}
		}
		return asked
	}
	return 0
}

// retryAfter reads a response's Retry-After (seconds).
func retryAfter(res *sip.Response) time.Duration {
	h := proxy.FirstHeader(res, "Retry-After")
	if h == nil {
		return 0
	}
	v, _, _ := strings.Cut(strings.TrimSpace(h.Value()), ";")
	v, _, _ = strings.Cut(v, "(")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, time.Hour)
}

// newCallID is the Call-ID of sipwake's own REGISTERs for one contact.
func newCallID() string {
	return "sw-" + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
}

// PushTarget converts a stored push target to the push package's.
func PushTarget(t *store.PushTarget) push.Target {
	return push.Target{Provider: t.Provider, Token: t.Token, Param: t.Param, Tokens: t.Tokens, Legacy: t.Legacy}
}

// IsAPNs reports whether the target is an Apple device.
func IsAPNs(t *store.PushTarget) bool {
	return t.Provider == push.ProviderAPNs || t.Provider == push.ProviderAPNsDev
}

// Accepts reports whether the device accepts push type typ (PushType*).
func Accepts(t *store.PushTarget, typ string) bool {
	for _, x := range t.Types {
		if x == typ {
			return true
		}
	}
	return false
}
