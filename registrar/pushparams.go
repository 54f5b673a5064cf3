package registrar

// Push parameters carried by a REGISTER Contact: RFC 8599 (pn-provider,
// pn-prid, pn-param, pn-purr), Apple's "remote&voip" multi-token form used by
// Linphone and Flexisip, and the Linphone legacy set (pn-type, pn-tok,
// app-id, pn-msg-str, ...).
//
// This file is on the REGISTER hot path: no reflection, no regexp, no map
// unless the device sent legacy options or two tokens, and a handful of
// small allocations for the PushTarget itself (none without push
// parameters).

import (
	"errors"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/store"
)

// Push notification services (RFC 8599 pn-provider values) that sipwake
// understands. PushTarget.Provider is always one of these, lower case.
const (
	// ProviderAPNs is Apple's production APNs.
	ProviderAPNs = "apns"
	// ProviderAPNsSandbox is Apple's development (sandbox) APNs.
	ProviderAPNsSandbox = "apns.dev"
	// ProviderFCM is Firebase Cloud Messaging.
	ProviderFCM = "fcm"
	// ProviderWebPush is RFC 8030 generic event delivery over HTTP push.
	ProviderWebPush = "webpush"
)

// Push types recorded in PushTarget.Types (and as keys of PushTarget.Tokens).
//
// APNs devices get PushTypeVoIP (PushKit, topic "<bundle>.voip") and/or
// PushTypeRemote (alert or background push, topic "<bundle>"). FCM and Web
// Push devices get PushTypeData: one data message that the app's own code
// receives, whatever the event.
const (
	PushTypeVoIP   = "voip"
	PushTypeRemote = "remote"
	PushTypeData   = "data"
)

// Names of the push parameters ParsePush reads. Matching is case-insensitive.
const (
	ParamProvider = "pn-provider"
	ParamPRID     = "pn-prid"
	ParamParam    = "pn-param"
	ParamPURR     = "pn-purr"
	ParamType     = "pn-type" // Linphone legacy
	ParamTok      = "pn-tok"  // Linphone legacy
	ParamAppID    = "app-id"  // Linphone legacy
)

// RFC 8599 §8.1 (the 555 response code).
const (
	// StatusPushNotSupported answers a REGISTER naming a push service the
	// proxy does not support.
	StatusPushNotSupported = 555
	// ReasonPushNotSupported is the registered reason phrase of 555.
	ReasonPushNotSupported = "Push Notification Service Not Supported"
)

// Limits on what a Contact may make sipwake store. A value over a limit is a
// bad parameter (400); legacy options over their limits are dropped.
const (
	maxTokenLen       = 4096 // Web Push subscription URLs are the longest
	maxParamLen       = 512
	maxPURRLen        = 256
	maxLegacyEntries  = 16
	maxLegacyKeyLen   = 64
	maxLegacyValueLen = 256
)

// Errors returned by ParsePush; compare with errors.Is. Every error ParsePush
// returns is a *PushParamError that unwraps to one of the first two.
var (
	// ErrUnknownProvider: pn-provider (or legacy pn-type) names a push
	// service sipwake does not support. The registrar answers 555.
	ErrUnknownProvider = errors.New("registrar: push notification service not supported")
	// ErrBadPushParams: the push parameters are incomplete or malformed
	// (missing pn-prid, malformed pn-param, empty token, ...). The
	// registrar answers 400.
	ErrBadPushParams = errors.New("registrar: invalid push parameters")
	// ErrMissingPRID: pn-provider and pn-param without pn-prid. It is an
	// ErrBadPushParams, singled out because RFC 8599 §4.1.2 has a UA drop
	// pn-prid when it removes its binding: a registrar handling a
	// de-registration (expires 0) should ignore it.
	ErrMissingPRID error = &PushParamError{Param: ParamPRID, Problem: problemMissing, kind: ErrBadPushParams}
)

// Problems a PushParamError reports (constant phrases).
const (
	problemMissing   = "missing"
	problemEmpty     = "empty"
	problemMalformed = "malformed"
	problemTooLong   = "too long"
	problemMismatch  = "does not match pn-param"
	problemUnknown   = "unknown service"
)

// PushParamError says which push parameter is wrong and how. It never holds
// a token: Value is only set for the provider name of an unknown service.
type PushParamError struct {
	// Param is the canonical parameter name, e.g. "pn-prid".
	Param string
	// Problem is a constant phrase: "missing", "empty", "malformed", ...
	Problem string
	// Value is the unsupported provider (truncated), for ErrUnknownProvider.
	Value string
	kind  error
}

// Error implements error.
func (e *PushParamError) Error() string {
	if e.kind == ErrUnknownProvider {
		return e.kind.Error() + ": " + e.Param + " " + strconv.Quote(e.Value)
	}
	return e.kind.Error() + ": " + e.Param + " " + e.Problem
}

// Unwrap returns ErrUnknownProvider or ErrBadPushParams.
func (e *PushParamError) Unwrap() error { return e.kind }

// Is reports whether target is a PushParamError for the same parameter and
// problem (so errors.Is(err, ErrMissingPRID) works).
func (e *PushParamError) Is(target error) bool {
	t, ok := target.(*PushParamError)
	return ok && t.kind == e.kind && t.Param == e.Param && t.Problem == e.Problem
}

func badParam(param, problem string) error {
	return &PushParamError{Param: param, Problem: problem, kind: ErrBadPushParams}
}

func unknownProvider(param, value string) error {
	if len(value) > 32 {
		value = value[:32]
	}
	return &PushParamError{Param: param, Problem: problemUnknown, Value: strings.Clone(value), kind: ErrUnknownProvider}
}

// StatusFor maps an error of this package to the SIP response the registrar
// sends: 555 "Push Notification Service Not Supported" (RFC 8599 §8.1) for
// ErrUnknownProvider, 400 with a reason naming the parameter for
// ErrBadPushParams, 400 for ErrBadAOR, 500 for anything else, 200 "OK" for
// nil. Reason phrases are constants: no input from the request is echoed.
func StatusFor(err error) (code int, reason string) {
	var pe *PushParamError
	switch {
	case err == nil:
		return 200, "OK"
	case errors.Is(err, ErrUnknownProvider):
		return StatusPushNotSupported, ReasonPushNotSupported
	case errors.Is(err, ErrBadPushParams):
		if errors.As(err, &pe) && pe.kind == ErrBadPushParams {
			return 400, "Bad Push Parameters (" + pe.Param + " " + pe.Problem + ")"
		}
		return 400, "Bad Push Parameters"
	case errors.Is(err, ErrUnsupportedScheme):
		// RFC 3261 §10.2: the To of a REGISTER MUST be a SIP or SIPS URI;
		// RFC 4475 §3.3.4 (unksm2) expects a registrar to refuse it with 400.
		return 400, "Bad Request (AOR Must Be A SIP Or SIPS URI)"
	case errors.Is(err, ErrBadAOR):
		return 400, "Bad Request (Invalid Address Of Record)"
	default:
		return 500, "Server Internal Error"
	}
}

// MaskToken renders a push token for logs and the admin API: an ellipsis and
// at most the last 6 characters (fewer for short tokens, so that a short
// token is never shown whole).
func MaskToken(token string) string {
	n := min(6, len(token)/3)
	return "…" + token[len(token)-n:]
}

// SupportedProviders returns the pn-provider values ParsePush accepts, in a
// fresh slice.
func SupportedProviders() []string {
	return []string{ProviderAPNs, ProviderAPNsSandbox, ProviderFCM, ProviderWebPush}
}

// canonicalProvider maps a pn-provider value (any case) to its constant.
func canonicalProvider(p string) string {
	switch {
	case strings.EqualFold(p, ProviderAPNs):
		return ProviderAPNs
	case strings.EqualFold(p, ProviderAPNsSandbox):
		return ProviderAPNsSandbox
	case strings.EqualFold(p, ProviderFCM):
		return ProviderFCM
	case strings.EqualFold(p, ProviderWebPush):
		return ProviderWebPush
	}
	return ""
}

// slot is what a Contact or URI parameter name means to this file.
type slot uint8

const (
	slotProvider slot = iota
	slotPRID
	slotParam
	slotPURR
	slotType
	slotTok
	slotAppID
	numSlots

	slotLegacy = numSlots     // any other pn-* parameter: kept in Legacy
	slotPNSReg = numSlots + 1 // the +sip.pnsreg media feature tag
	slotNone   = 255
)

// classify tells what a parameter name is. Names are compared
// case-insensitively after trimming white space (RFC 3261 allows LWS around
// ";" and "=" in header parameters, and sipgo keeps it in the key).
func classify(name string) slot {
	name = trimLWS(name)
	if len(name) < 3 {
		return slotNone
	}
	switch name[0] {
	case 'p', 'P':
		if name[1]|0x20 != 'n' || name[2] != '-' {
			return slotNone
		}
		switch rest := name[3:]; {
		case strings.EqualFold(rest, "provider"):
			return slotProvider
		case strings.EqualFold(rest, "prid"):
			return slotPRID
		case strings.EqualFold(rest, "param"):
			return slotParam
		case strings.EqualFold(rest, "purr"):
			return slotPURR
		case strings.EqualFold(rest, "type"):
			return slotType
		case strings.EqualFold(rest, "tok"):
			return slotTok
		}
		return slotLegacy
	case 'a', 'A':
		if strings.EqualFold(name, ParamAppID) {
			return slotAppID
		}
	case '+':
		if strings.EqualFold(name, "+sip.pnsreg") {
			return slotPNSReg
		}
	}
	return slotNone
}

// IsPushParam reports whether a Contact or Contact-URI parameter name is one
// that StripPush removes: every pn-* name, app-id and +sip.pnsreg, in any
// case.
func IsPushParam(name string) bool { return classify(name) != slotNone }

// StripPush removes every push parameter (see IsPushParam) from params, in
// place, and returns the shortened slice; use it for the Contact URI
// parameters and the Contact header parameters alike, before anything is
// sent to the PBX. Other parameters (transport, ob, +sip.instance, reg-id,
// expires, ...) keep their order. The backing array is reused and its tail
// cleared, so assign the result and clone first if the original is still
// needed. params without push parameters are returned untouched (no write,
// no allocation).
func StripPush(params sip.HeaderParams) sip.HeaderParams {
	first := -1
	for i := range params {
		if classify(params[i].K) != slotNone {
			first = i
			break
		}
	}
	if first < 0 {
		return params
	}
	n := first
	for _, kv := range params[first+1:] {
		if classify(kv.K) == slotNone {
			params[n] = kv
			n++
		}
	}
	clear(params[n:])
	return params[:n]
}

// pushFields gathers the push parameters of one Contact, URI parameters
// first: a header parameter only fills what the URI did not give.
type pushFields struct {
	val     [numSlots]string
	set     uint16
	legacy  [maxLegacyEntries]sip.HeaderKV
	nLegacy int
}

func (f *pushFields) has(s slot) bool { return f.set&(1<<s) != 0 }

func (f *pushFields) collect(params sip.HeaderParams) {
	for _, kv := range params {
		switch s := classify(kv.K); {
		case s < numSlots:
			if !f.has(s) {
				f.val[s] = kv.V
				f.set |= 1 << s
			}
		case s == slotLegacy:
			if f.nLegacy < maxLegacyEntries {
				f.legacy[f.nLegacy] = kv
				f.nLegacy++
			}
		}
	}
}

// value returns a parameter's value: trimmed, unquoted, percent-decoded.
func (f *pushFields) value(s slot, name string) (string, error) {
	v, ok := decodeValue(f.val[s])
	if !ok {
		return "", badParam(name, problemMalformed)
	}
	return v, nil
}

// ParsePush reads the push parameters of one Contact: uriParams are the
// Contact URI's parameters (where RFC 8599 puts them), headerParams the
// Contact header's (where clients such as baresip put them). Both are
// merged; for a parameter present in both, the URI wins. Names and the
// provider are case-insensitive; values may be quoted or percent-encoded
// (sipgo leaves "%3A" and "%26" as they are; ParsePush decodes them).
//
// Results:
//   - no push parameters: nil, false, nil.
//   - RFC 8599 capability query, "pn-provider" with no value and no pn-prid:
//     nil, true, nil. Answer it with FeatureCaps(SupportedProviders(), ...).
//   - "pn-provider=<service>" (a supported one) with neither pn-prid nor
//     pn-param: a query for that one service (RFC 8599 §4.1; OpenSIPS
//     treats it the same way): nil, true, nil as well. An unsupported one
//     is ErrUnknownProvider. A non-nil target therefore always has a token.
//   - a push target: target, false, nil. Provider is a Provider* constant;
//     Token, Param, Types (and Tokens for the multi-token form) are filled.
//   - otherwise nil, false and an error wrapping ErrUnknownProvider (answer
//     555) or ErrBadPushParams (answer 400); see StatusFor. Errors never
//     contain a token.
//
// RFC 8599 (pn-provider apns, apns.dev, fcm, webpush):
//   - APNs: pn-param is "TEAMID.bundle.id" optionally followed by a service
//     suffix ".voip", ".remote", ".remote&voip" or ".voip&remote"
//     (Linphone/Flexisip). pn-prid is one token, optionally "token:voip" or
//     "token:remote", or, for two services, "tokA:remote&tokB:voip" in
//     either order. No suffix means remote. Param is stored as
//     "TEAMID.bundle.id" plus ".voip" when voip is the only service, so the
//     topic is always the part after "TEAMID.", and a VoIP push goes to
//     strings.TrimSuffix(topic, ".voip") + ".voip". Types is [voip],
//     [remote] or [voip remote]; Token is the VoIP token when there is one,
//     else the remote one; Tokens maps each type to its token only in the
//     two-token form.
//   - FCM: pn-param (the Firebase project id) is required and must be made
//     of token characters. Types is [data].
//   - Web Push: pn-prid is the push subscription URL, pn-param optional.
//     Types is [data].
//
// Linphone legacy, used only when pn-provider is absent: pn-type "apple"
// becomes apns ("apns.dev" when app-id ends in ".dev"), "firebase",
// "google" and "android" become fcm, anything else is an unknown service;
// pn-tok is the token. For apple, app-id is required and Param is app-id
// without its ".dev"/".prod" suffix: the bundle id alone, with NO team id
// (legacy clients never send one). Legacy targets are recognisable by
// Legacy["pn-type"]; the APNs topic of such a target is Param itself. Types
// is [voip] when that bundle ends in ".voip", else [remote]. For FCM, app-id
// (the sender id) is optional and becomes Param.
//
// Legacy (both forms) keeps every other pn-* parameter (pn-msg-str,
// pn-call-str, pn-groupchat-str, pn-call-snd, pn-msg-snd, pn-silent,
// pn-timeout, ...), keyed by lower-case name, value decoded but otherwise
// verbatim; pn-type and app-id are added only to a target built from them
// (never when RFC 8599 parameters won). At most 16 options besides pn-type
// and app-id are kept; options whose key is not an RFC 3261 token or whose
// value is oversized or holds control characters are dropped. The token parameters (pn-prid, pn-tok) are never
// copied there.
// Strings in the result never alias the request's buffer.
func ParsePush(uriParams, headerParams sip.HeaderParams) (target *store.PushTarget, query bool, err error) {
	var f pushFields
	f.collect(uriParams)
	f.collect(headerParams)
	switch {
	case f.has(slotProvider):
		return f.rfc8599()
	case f.has(slotTok) || f.has(slotType):
		return f.linphoneLegacy()
	case f.has(slotPRID) || f.has(slotParam):
		return nil, false, badParam(ParamProvider, problemMissing)
	}
	return nil, false, nil
}

func (f *pushFields) rfc8599() (*store.PushTarget, bool, error) {
	prov, err := f.value(slotProvider, ParamProvider)
	if err != nil {
		return nil, false, err
	}
	if prov == "" {
		if f.has(slotPRID) {
			return nil, false, badParam(ParamProvider, problemEmpty)
		}
		return nil, true, nil // capability query: which services?
	}
	provider := canonicalProvider(prov)
	if provider == "" {
		return nil, false, unknownProvider(ParamProvider, prov)
	}
	if !f.has(slotPRID) {
		if f.has(slotParam) {
			return nil, false, ErrMissingPRID
		}
		return nil, true, nil // query: is this one service supported?
	}
	prid, err := f.value(slotPRID, ParamPRID)
	if err != nil {
		return nil, false, err
	}
	if err := checkLen(ParamPRID, prid, maxTokenLen); err != nil {
		return nil, false, err
	}
	param, err := f.value(slotParam, ParamParam)
	if err != nil {
		return nil, false, err
	}
	if err := checkLen(ParamParam, param, maxParamLen); err != nil {
		return nil, false, err
	}

	t := &store.PushTarget{Provider: provider}
	switch provider {
	case ProviderAPNs, ProviderAPNsSandbox:
		err = parseAPNs(t, prid, param, f.has(slotParam))
	case ProviderFCM:
		switch {
		case !f.has(slotParam):
			err = badParam(ParamParam, problemMissing)
		case param == "":
			err = badParam(ParamParam, problemEmpty)
		case !isTokenString(param):
			err = badParam(ParamParam, problemMalformed)
		default:
			err = setSingle(t, ParamPRID, prid, strings.Clone(param), PushTypeData)
		}
	case ProviderWebPush:
		if !isPrintable(param) {
			err = badParam(ParamParam, problemMalformed)
		} else {
			err = setSingle(t, ParamPRID, prid, strings.Clone(param), PushTypeData)
		}
	}
	if err != nil {
		return nil, false, err
	}
	if f.has(slotPURR) {
		purr, err := f.value(slotPURR, ParamPURR)
		if err != nil {
			return nil, false, err
		}
		if len(purr) > maxPURRLen || !isPrintable(purr) {
			return nil, false, badParam(ParamPURR, problemMalformed)
		}
		t.PURR = strings.Clone(purr)
	}
	t.Legacy = f.legacyMap(false)
	return t, false, nil
}

func (f *pushFields) linphoneLegacy() (*store.PushTarget, bool, error) {
	if !f.has(slotType) {
		return nil, false, badParam(ParamType, problemMissing)
	}
	typ, err := f.value(slotType, ParamType)
	if err != nil {
		return nil, false, err
	}
	if typ == "" {
		return nil, false, badParam(ParamType, problemEmpty)
	}
	if !f.has(slotTok) {
		return nil, false, badParam(ParamTok, problemMissing)
	}
	tok, err := f.value(slotTok, ParamTok)
	if err != nil {
		return nil, false, err
	}
	if err := checkLen(ParamTok, tok, maxTokenLen); err != nil {
		return nil, false, err
	}
	app, err := f.value(slotAppID, ParamAppID)
	if err != nil {
		return nil, false, err
	}
	if len(app) > maxParamLen {
		return nil, false, badParam(ParamAppID, problemTooLong)
	}

	t := &store.PushTarget{}
	switch {
	case strings.EqualFold(typ, "apple"):
		if app == "" {
			return nil, false, badParam(ParamAppID, problemMissing)
		}
		t.Provider = ProviderAPNs
		bundle := app
		if hasSuffixFold(bundle, ".dev") {
			t.Provider = ProviderAPNsSandbox
			bundle = bundle[:len(bundle)-len(".dev")]
		} else if hasSuffixFold(bundle, ".prod") {
			bundle = bundle[:len(bundle)-len(".prod")]
		}
		if !isBundleID(bundle) {
			return nil, false, badParam(ParamAppID, problemMalformed)
		}
		typ := PushTypeRemote
		if hasSuffixFold(bundle, ".voip") {
			typ = PushTypeVoIP
		}
		err = setSingle(t, ParamTok, tok, strings.Clone(bundle), typ)
	case strings.EqualFold(typ, "firebase"), strings.EqualFold(typ, "google"), strings.EqualFold(typ, "android"):
		if !isPrintable(app) {
			return nil, false, badParam(ParamAppID, problemMalformed)
		}
		t.Provider = ProviderFCM
		err = setSingle(t, ParamTok, tok, strings.Clone(app), PushTypeData)
	default:
		return nil, false, unknownProvider(ParamType, typ)
	}
	if err != nil {
		return nil, false, err
	}
	t.Legacy = f.legacyMap(true)
	return t, false, nil
}

// setSingle fills a one-token target.
func setSingle(t *store.PushTarget, name, token, param, typ string) error {
	if err := checkToken(name, token); err != nil {
		return err
	}
	t.Token = strings.Clone(token)
	t.Param = param
	t.Types = []string{typ}
	return nil
}

// APNs services, as bits.
const (
	svcVoIP   = 1 << iota
	svcRemote = 1 << iota
)

func serviceBit(s string) int {
	switch {
	case strings.EqualFold(s, PushTypeVoIP):
		return svcVoIP
	case strings.EqualFold(s, PushTypeRemote):
		return svcRemote
	}
	return 0
}

// serviceList parses "voip", "remote", "remote&voip", "voip&remote".
func serviceList(s string) int {
	got := 0
	for part := range strings.SplitSeq(s, "&") {
		b := serviceBit(part)
		if b == 0 || got&b != 0 {
			return 0
		}
		got |= b
	}
	return got
}

// parseAPNs fills t from an APNs pn-prid and pn-param (see ParsePush).
func parseAPNs(t *store.PushTarget, prid, param string, paramSet bool) error {
	if !paramSet {
		return badParam(ParamParam, problemMissing)
	}
	if param == "" {
		return badParam(ParamParam, problemEmpty)
	}
	dot := strings.IndexByte(param, '.')
	if dot <= 0 || !isAlnum(param[:dot]) {
		return badParam(ParamParam, problemMalformed) // no team id
	}
	team, rest := param[:dot], param[dot+1:]
	services, explicit, bundle := svcRemote, false, rest
	if i := strings.LastIndexByte(rest, '.'); i > 0 {
		if s := serviceList(rest[i+1:]); s != 0 {
			services, explicit, bundle = s, true, rest[:i]
		}
	}
	if !isBundleID(bundle) {
		return badParam(ParamParam, problemMalformed)
	}

	var voipTok, remoteTok string
	if strings.IndexByte(prid, '&') >= 0 {
		got := 0
		for part := range strings.SplitSeq(prid, "&") {
			c := strings.LastIndexByte(part, ':')
			if c <= 0 {
				return badParam(ParamPRID, problemMalformed)
			}
			b := serviceBit(part[c+1:])
			if b == 0 || got&b != 0 {
				return badParam(ParamPRID, problemMalformed)
			}
			got |= b
			if b == svcVoIP {
				voipTok = part[:c]
			} else {
				remoteTok = part[:c]
			}
		}
		if explicit && got != services {
			return badParam(ParamPRID, problemMismatch)
		}
		services = got
	} else {
		tok, typed := prid, 0
		if c := strings.LastIndexByte(prid, ':'); c > 0 {
			if b := serviceBit(prid[c+1:]); b != 0 {
				tok, typed = prid[:c], b
			}
		}
		switch {
		case typed != 0:
			if explicit && services&typed == 0 {
				return badParam(ParamPRID, problemMismatch)
			}
			services = typed
		case services == svcVoIP|svcRemote:
			return badParam(ParamPRID, problemMismatch) // one token, two services
		}
		if services == svcVoIP {
			voipTok = tok
		} else {
			remoteTok = tok
		}
	}

	switch services {
	case svcVoIP:
		if err := checkToken(ParamPRID, voipTok); err != nil {
			return err
		}
		t.Token = strings.Clone(voipTok)
		t.Types = []string{PushTypeVoIP}
		t.Param = team + "." + bundle + ".voip"
	case svcRemote:
		if err := checkToken(ParamPRID, remoteTok); err != nil {
			return err
		}
		t.Token = strings.Clone(remoteTok)
		t.Types = []string{PushTypeRemote}
		t.Param = team + "." + bundle
	default:
		if err := checkToken(ParamPRID, voipTok); err != nil {
			return err
		}
		if err := checkToken(ParamPRID, remoteTok); err != nil {
			return err
		}
		t.Token = strings.Clone(voipTok)
		t.Types = []string{PushTypeVoIP, PushTypeRemote}
		t.Tokens = map[string]string{PushTypeVoIP: t.Token, PushTypeRemote: strings.Clone(remoteTok)}
		t.Param = team + "." + bundle
	}
	return nil
}

// knownLegacyKeys are the legacy options Linphone and Flexisip use; a key
// found here is stored as this constant instead of a copy.
var knownLegacyKeys = [...]string{
	ParamType, ParamAppID, "pn-msg-str", "pn-call-str", "pn-groupchat-str", "pn-call-snd",
	"pn-msg-snd", "pn-silent", "pn-timeout", "pn-missing-call-str",
	"pn-call-accepted-elsewhere-str", "pn-call-declined-elsewhere-str",
}

func internLegacyKey(k string) string {
	for _, known := range knownLegacyKeys {
		if strings.EqualFold(k, known) {
			return known
		}
	}
	return ""
}

// legacyEntry is one option on its way into PushTarget.Legacy.
type legacyEntry struct {
	key   string // as received (trimmed)
	known string // interned lower-case key, or ""
	val   string // decoded value (may alias the request)
}

// legacySet collects options before they are copied out in one buffer.
type legacySet struct {
	ents [maxLegacyEntries + 2]legacyEntry
	n    int
	size int // bytes to copy: values and the keys that are not interned
}

// add keeps one option unless the key is already there (the URI's copy and
// pn-type/app-id come first), or it is oversized or unprintable.
func (s *legacySet) add(k, v string) {
	k = trimLWS(k)
	if len(k) > maxLegacyKeyLen || !isTokenString(k) || s.n == len(s.ents) {
		return
	}
	for i := range s.n {
		if strings.EqualFold(s.ents[i].key, k) {
			return
		}
	}
	d, ok := decodeValue(v)
	if !ok {
		d = unquote(trimLWS(v))
	}
	if len(d) > maxLegacyValueLen || !isPrintable(d) {
		return
	}
	e := &s.ents[s.n]
	e.key, e.known, e.val = k, internLegacyKey(k), d
	if e.known == "" {
		s.size += len(k)
	}
	s.size += len(d)
	s.n++
}

// legacyMap builds PushTarget.Legacy, or nil when there is nothing to keep.
// Keys are lower case; keys and values are copied into one new string so
// that nothing aliases the request.
//
// withLegacyIDs adds pn-type and app-id: only for a target built from them,
// so that Legacy["pn-type"] tells a team-less legacy APNs Param apart.
func (f *pushFields) legacyMap(withLegacyIDs bool) map[string]string {
	var s legacySet
	if withLegacyIDs && f.has(slotType) {
		s.add(ParamType, f.val[slotType])
	}
	if withLegacyIDs && f.has(slotAppID) {
		s.add(ParamAppID, f.val[slotAppID])
	}
	for _, kv := range f.legacy[:f.nLegacy] {
		s.add(kv.K, kv.V)
	}
	if s.n == 0 {
		return nil
	}
	var b strings.Builder
	b.Grow(s.size)
	for _, e := range s.ents[:s.n] {
		if e.known == "" {
			for i := 0; i < len(e.key); i++ {
				c := e.key[i]
				if 'A' <= c && c <= 'Z' {
					c += 'a' - 'A'
				}
				b.WriteByte(c)
			}
		}
		b.WriteString(e.val)
	}
	buf, off := b.String(), 0
	m := make(map[string]string, s.n)
	for _, e := range s.ents[:s.n] {
		k := e.known
		if k == "" {
			k = buf[off : off+len(e.key)]
			off += len(e.key)
		}
		m[k] = buf[off : off+len(e.val)]
		off += len(e.val)
	}
	return m
}

func checkLen(name, v string, limit int) error {
	if len(v) > limit {
		return badParam(name, problemTooLong)
	}
	return nil
}

// checkToken accepts a non-empty token without control characters or
// spaces.
func checkToken(name, tok string) error {
	switch {
	case tok == "":
		return badParam(name, problemEmpty)
	case len(tok) > maxTokenLen:
		return badParam(name, problemTooLong)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c == 0x7f {
			return badParam(name, problemMalformed)
		}
	}
	return nil
}

// decodeValue trims, unquotes and percent-decodes a parameter value. It
// allocates only when the value holds an escape. ok is false for a broken
// escape ("%4", "%zz").
func decodeValue(v string) (string, bool) {
	v = unquote(trimLWS(v))
	i := strings.IndexByte(v, '%')
	if i < 0 {
		return v, true
	}
	b := make([]byte, 0, len(v))
	b = append(b, v[:i]...)
	for ; i < len(v); i++ {
		c := v[i]
		if c != '%' {
			b = append(b, c)
			continue
		}
		if i+2 >= len(v) || !isHex(v[i+1]) || !isHex(v[i+2]) {
			return "", false
		}
		b = append(b, unhex(v[i+1])<<4|unhex(v[i+2]))
		i += 2
	}
	return string(b), true
}

func unquote(v string) string {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		return v[1 : len(v)-1]
	}
	return v
}

// trimLWS trims white space around a name or value: SIP's SP and HTAB
// (RFC 3261 allows LWS around ";" and "="), and, to be safe about what might
// reach the PBX, every other white space strings.TrimSpace knows (a name
// like "\fpn-prid" is still a push parameter).
func trimLWS(s string) string {
	if n := len(s); n > 0 && ' ' < s[0] && s[0] < 0x80 && ' ' < s[n-1] && s[n-1] < 0x80 {
		return s // the common case: nothing to trim
	}
	return strings.TrimSpace(s)
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func isAlnumByte(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func isAlnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isAlnumByte(s[i]) {
			return false
		}
	}
	return true
}

// isBundleID accepts an Apple bundle id: alphanumerics, "-", "_" and ".",
// not starting or ending with ".".
func isBundleID(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnumByte(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

// isTokenChar reports RFC 3261 §25.1 token characters.
func isTokenChar(c byte) bool {
	if isAlnumByte(c) {
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

func isTokenString(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// isPrintable rejects ASCII control characters (CR, LF, NUL, ...); space
// and UTF-8 are allowed.
func isPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}
