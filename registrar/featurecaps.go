package registrar

// Feature-Caps in the 2xx to a REGISTER (RFC 8599 §5, RFC 6809).
//
// RFC 6809 defines the header:
//
//	Feature-Caps = ( "Feature-Caps" / "fc" ) HCOLON fc-value *(COMMA fc-value)
//	fc-value     = "*" *(SEMI feature-cap)
//	feature-cap  = "+" fcap-name [EQUAL LDQUOT (fcap-value-list / fcap-string-value) RDQUOT]
//
// and RFC 8599 §8 the indicators a push-aware proxy puts in it:
//
//	pns-fc    = "+sip.pns" EQUAL LDQUOT pns-list RDQUOT
//	pns-list  = pns *(COMMA pns)        ; pns = an RFC 3840 tag-value
//	pnsreg-fc = "+sip.pnsreg" EQUAL LDQUOT 1*DIGIT RDQUOT
//
// So several services go in ONE sip.pns indicator, comma-separated inside
// the quotes, and the value always starts with "*":
//
//	Feature-Caps: *;+sip.pns="apns";+sip.pnsreg="120"
//	Feature-Caps: *;+sip.pns="apns,apns.dev,fcm,webpush"
//
// A proxy that will send pushes for a binding answers its REGISTER with
// sip.pns naming the service the Contact's pn-provider asked for; a
// capability query (pn-provider without a value) gets every supported
// service. sip.pnsreg goes in only when the device said, with the
// +sip.pnsreg Contact feature tag (RFC 8599 §4.1), that it can refresh its
// binding by itself; its value is the number of seconds before the binding
// expires by which the registrar expects that refresh (OpenSIPS uses 130).
// sip.vapid (Web Push VAPID public key) and sip.pnspurr are not produced.

import (
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// FeatureCapsHeader is the name of the header FeatureCaps builds a value
// for.
const FeatureCapsHeader = "Feature-Caps"

// FeatureCaps returns a Feature-Caps header value (RFC 6809, RFC 8599 §8):
// "*", then +sip.pns listing the providers (lower-cased, de-duplicated, in
// order; names that are not RFC 3840 tag-value tokens are skipped), then,
// when refresh > 0, +sip.pnsreg with refresh in whole seconds (at least 1).
// It returns "" when there is nothing to say (no valid provider and no
// refresh), in which case no header should be added.
//
//	FeatureCaps([]string{"apns"}, 120*time.Second) == `*;+sip.pns="apns";+sip.pnsreg="120"`
func FeatureCaps(providers []string, refresh time.Duration) string {
	var b strings.Builder
	n := 0
	for i, p := range providers {
		if !isPNSValue(p) || containsFold(providers[:i], p) {
			continue
		}
		if n == 0 {
			b.Grow(32)
			b.WriteString(`*;+sip.pns="`)
		} else {
			b.WriteByte(',')
		}
		b.WriteString(asciiLower(p))
		n++
	}
	if n > 0 {
		b.WriteByte('"')
	}
	if refresh > 0 {
		if n == 0 {
			b.WriteByte('*')
		}
		secs := int64(refresh / time.Second)
		if secs < 1 {
			secs = 1
		}
		b.WriteString(`;+sip.pnsreg="`)
		b.WriteString(strconv.FormatInt(secs, 10))
		b.WriteByte('"')
	}
	return b.String()
}

// isPNSValue accepts an RFC 3840 tag-value token (no "!" prefix, no quote,
// no comma): what may sit inside +sip.pns="...".
func isPNSValue(p string) bool {
	if p == "" || p[0] == '!' {
		return false
	}
	return isTokenString(p)
}

// containsFold reports whether list holds a valid entry equal to p, ignoring
// case (an invalid earlier entry does not hide a later valid one).
func containsFold(list []string, p string) bool {
	for _, q := range list {
		if strings.EqualFold(q, p) && isPNSValue(q) {
			return true
		}
	}
	return false
}

// HasPNSReg reports whether Contact header parameters carry the +sip.pnsreg
// media feature tag (RFC 8599 §4.1): the device can refresh its binding
// without being woken, and the 2xx should carry +sip.pnsreg. StripPush
// removes the tag, so call HasPNSReg first.
func HasPNSReg(contactParams sip.HeaderParams) bool {
	for _, kv := range contactParams {
		if classify(kv.K) == slotPNSReg {
			return true
		}
	}
	return false
}
