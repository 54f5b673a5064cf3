package registrar

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
	"github.com/sipwake/sipwake/store"
)

// sharedToken is the token of the contact every device of an AOR shares
// at the PBX (per-AOR upstream contacts): derived like a binding token,
// from an identity no device can have.
func (r *Registrar) sharedToken(aor string) string {
	return r.tokens.token(aor, "\x00aor")
}

// AuthFor says how sipwake's own REGISTERs for aor satisfy the PBX:
// AuthCredentials or AuthTrusted, by registrar.on_behalf.domains, else
// registrar.on_behalf.auth.
func (r *Registrar) AuthFor(aor string) string {
	_, host, _ := strings.Cut(aor, "@")
	if a, ok := r.cfg.OnBehalf.Domains[strings.ToLower(host)]; ok {
		return a
	}
	return r.cfg.OnBehalf.Auth
}

// canKeep reports whether sipwake can keep aor registered at the PBX by
// itself: the PBX trusts it for the AOR's domain, or it holds the
// account's credentials. Without either, the device keeps the expiry the
// PBX granted (as in pass-through mode) and refresh pushes wake it.
func (r *Registrar) canKeep(ctx context.Context, aor string, req *proxy.Request) bool {
	if r.AuthFor(aor) == AuthTrusted {
		return true
	}
	_, err := r.store.Account(ctx, aor)
	switch {
	case err == nil:
		return r.cfg.Keyring != nil
	case !errors.Is(err, store.ErrNotFound):
		req.Log().Warn("account lookup failed", proxy.AOR(aor), zap.Error(err))
	}
	return false
}

// keep records what sipwake does for the device's contact until the
// device registers again: in on-behalf mode the refreshes at the PBX, and
// the refresh push. The device's REGISTER puts the record back to active
// (a registration that needed the app's login resumes here).
func (r *Registrar) keep(ctx context.Context, st *regState, b *store.Binding, granted time.Duration, onBehalf bool, req *proxy.Request) {
	shared := r.cfg.UpstreamContacts == PerAOR
	if !onBehalf && !shared && !(r.cfg.RefreshPush && b.RefreshPush) {
		return
	}
	now := time.Now()
	for range 3 {
		reg, err := r.store.Registration(ctx, st.upToken)
		switch {
		case errors.Is(err, store.ErrNotFound):
			reg = store.Registration{Token: st.upToken, CallID: newCallID()}
		case err != nil:
			req.Log().Warn("registration not kept", proxy.AOR(st.aor), zap.Error(err))
			return
		}
		if reg.State == store.RegNeedsLogin {
			req.Log().Info("upstream registration resumed", proxy.AOR(st.aor))
		}
		reg.AOR, reg.Transport = st.aor, st.contactTP
		if !shared {
			reg.Instance = b.Instance
		}
		reg.OnBehalf = onBehalf
		reg.Expires, reg.Granted = now.Add(granted), granted
		if !shared || !reg.DeviceExpires.After(b.Expires) {
			// (a shared contact keeps the expiry of the AOR's longest-lived device)
			reg.DeviceExpires = b.Expires
		}
		reg.LastSeen = now
		reg.State, reg.Failures, reg.AuthFailures = store.RegActive, 0, 0
		reg.RefreshAt = time.Time{}
		if !onBehalf {
			reg.State = store.RegPushOnly
		} else {
			reg.RefreshAt = now.Add(firstRefresh(granted))
		}
		reg.Due = r.nextDue(reg)
		_, err = r.store.PutRegistration(ctx, reg, true)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrConflict) {
			req.Log().Warn("registration not kept", proxy.AOR(st.aor), zap.Error(err))
			return
		}
	}
}

// forget drops the record of a contact the PBX no longer holds.
func (r *Registrar) forget(ctx context.Context, token string) {
	if err := r.store.DeleteRegistration(ctx, token); err != nil && !errors.Is(err, store.ErrNotFound) {
		r.log.Warn("registration not removed", zap.Error(err))
	}
}

// forgetAOR drops every record of an AOR (Contact: *).
func (r *Registrar) forgetAOR(ctx context.Context, aor string) {
	regs, err := r.store.ListRegistrations(ctx, store.RegistrationFilter{AOR: aor})
	if err != nil {
		r.log.Warn("registrations not removed", proxy.AOR(aor), zap.Error(err))
		return
	}
	for _, reg := range regs {
		r.forget(ctx, reg.Token)
	}
}

// sharedContact prepares a device REGISTER when every device of the AOR
// shares one contact at the PBX. It answers, and returns true, when the
// REGISTER changes nothing and the PBX registration is fresh (as OpenSIPS'
// mid-registrar does: fewer REGISTERs at the PBX). A device leaving while
// others stay turns into a refresh of the shared contact, so that the PBX
// still authenticates it and keeps the contact.
func (r *Registrar) sharedContact(ctx context.Context, req *proxy.Request, st *regState, start time.Time) bool {
	bs, err := r.store.Bindings(ctx, st.aor)
	if err != nil {
		return false // relayed as it is
	}
	now := time.Now()
	var mine *store.Binding
	var others time.Time
	for i := range bs {
		if bs[i].Instance == st.identity {
			mine = &bs[i]
		} else if bs[i].Expires.After(others) {
			others = bs[i].Expires
		}
	}
	if st.requested == 0 {
		if !others.IsZero() {
			st.keepShared = true
			st.upExpires = min(others.Sub(now), askExpires).Truncate(time.Second)
			if st.upExpires < r.cfg.MinExpires {
				st.upExpires = r.cfg.MinExpires
			}
		}
		return false
	}
	if mine == nil || !unchanged(mine, st, req) {
		return false
	}
	reg, err := r.store.Registration(ctx, st.upToken)
	if err != nil || (reg.State != store.RegActive && reg.State != store.RegPushOnly) || now.After(reg.Expires.Add(-reg.Granted/2)) {
		return false
	}
	// Fresh and unchanged: the device's binding is renewed here.
	deviceExp := reg.Expires.Sub(now).Truncate(time.Second)
	if reg.OnBehalf && st.requested > deviceExp {
		deviceExp = st.requested
	}
	b := *mine
	b.Expires, b.LastSeen = now.Add(deviceExp), now
	if _, err := r.store.PutBinding(ctx, b, r.cfg.MaxBindingsPerAOR); err != nil {
		return false
	}
	if reg.DeviceExpires.Before(b.Expires) || reg.LastSeen.Before(now) {
		reg.DeviceExpires = maxTime(reg.DeviceExpires, b.Expires)
		reg.LastSeen = now
		reg.Due = r.nextDue(reg)
		if _, err := r.store.PutRegistration(ctx, reg, true); err != nil && !errors.Is(err, store.ErrConflict) {
			req.Log().Warn("registration not kept", proxy.AOR(st.aor), zap.Error(err))
		}
	}
	r.metrics.result("ok")
	req.Log().Info("binding refreshed locally", proxy.AOR(st.aor), zap.String(proxy.FieldInstance, maskIdentity(st.identity)),
		zap.Float64("expires", deviceExp.Seconds()), zap.Float64(proxy.FieldDuration, time.Since(start).Seconds()))
	res := sip.NewResponseFromRequest(req.Msg, 200, "OK", nil)
	own := st.contact.Clone()
	own.Params.Add("expires", strconv.Itoa(int(deviceExp.Seconds())))
	res.AppendHeader(own)
	if st.push != nil {
		var refresh time.Duration
		if st.pnsreg {
			refresh = r.margin(deviceExp)
		}
		res.AppendHeader(sip.NewHeader("Feature-Caps", FeatureCaps([]string{st.push.Provider}, refresh)))
	}
	req.RespondWith(res)
	return true
}

// unchanged reports whether a REGISTER repeats the stored binding: same
// contact, address, transport and push target.
func unchanged(b *store.Binding, st *regState, req *proxy.Request) bool {
	if b.Contact != st.clean.String() || b.Source != req.Source || b.Transport != strings.ToLower(req.Transport) {
		return false
	}
	switch {
	case b.Push == nil && st.push == nil:
		return true
	case b.Push == nil || st.push == nil:
		return false
	}
	return b.Push.Provider == st.push.Provider && b.Push.Token == st.push.Token && b.Push.Param == st.push.Param
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
