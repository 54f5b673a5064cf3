package proxy

import (
	"bytes"
	"strconv"
	"strings"
)

// hidden replaces a credential that is hidden entirely.
const hidden = "…"

// MaskMessage returns a copy of a raw SIP message fit for traces and
// capture, with its secrets hidden:
//
//   - Authorization and Proxy-Authorization: the digest response and
//     cnonce (every other scheme's credentials entirely); the rspauth and
//     cnonce of Authentication-Info and Proxy-Authentication-Info;
//   - push tokens, the pn-prid and pn-tok parameters wherever they appear
//     (Request-URI, Contact, any header), masked as Mask does, each token
//     of the Apple "token:remote&token:voip" form on its own;
//   - SDES keys (a=crypto ... inline:KEY), MIKEY data (a=key-mgmt) and
//     k= keys in bodies;
//   - the body of a MESSAGE (request or response), replaced by a note of
//     its size.
//
// Content-Length is rewritten when the body changed size. The
// X-Sipwake-On-Behalf header is kept as it is. Line breaks, folding, case
// and compact header names are kept. raw is not modified; a message with
// nothing to hide comes back as an equal copy.
func MaskMessage(raw []byte) []byte {
	m := scanMessage(raw)
	body := raw[m.body:]
	newBody := body
	if m.isMessage() {
		if len(body) > 0 {
			newBody = []byte("[message body hidden: " + strconv.Itoa(len(body)) + " bytes]")
		}
	} else {
		newBody = maskBodyKeys(body)
	}
	resized := len(newBody) != len(body)

	out := make([]byte, 0, len(raw)+32)
	out = appendMaskedPushParams(out, raw[:m.first])
	for _, h := range m.headers {
		switch h.name {
		case "x-sipwake-on-behalf":
			out = append(out, raw[h.start:h.next]...)
		case "authorization", "proxy-authorization":
			out = append(out, raw[h.start:h.value]...)
			out = appendMaskedCredentials(out, raw[h.value:h.end])
			out = append(out, raw[h.end:h.next]...)
		case "authentication-info", "proxy-authentication-info":
			out = append(out, raw[h.start:h.value]...)
			out = appendMaskedAuthParams(out, raw[h.value:h.end], "rspauth", "cnonce")
			out = append(out, raw[h.end:h.next]...)
		case "content-length":
			if !resized {
				out = append(out, raw[h.start:h.next]...)
				continue
			}
			out = append(out, raw[h.start:h.value]...)
			out = strconv.AppendInt(out, int64(len(newBody)), 10)
			out = append(out, raw[h.end:h.next]...)
		default:
			out = appendMaskedPushParams(out, raw[h.start:h.next])
		}
	}
	out = append(out, raw[m.blank:m.body]...)
	return append(out, newBody...)
}

// pushParams are the URI and header parameters that carry push tokens
// (RFC 8599 pn-prid, Linphone's pn-tok).
var pushParams = []string{"pn-prid", "pn-tok"}

// appendMaskedPushParams appends s with the value of every push token
// parameter masked.
func appendMaskedPushParams(out, s []byte) []byte {
	i := 0
	for {
		semi := bytes.IndexByte(s[i:], ';')
		if semi < 0 {
			return append(out, s[i:]...)
		}
		j := i + semi + 1
		for j < len(s) && isSWS(s[j]) {
			j++
		}
		name := ""
		for _, p := range pushParams {
			if hasPrefixFold(s[j:], p) {
				name = p
				break
			}
		}
		if name == "" {
			out = append(out, s[i:j]...)
			i = j
			continue
		}
		k := j + len(name)
		for k < len(s) && isSWS(s[k]) {
			k++
		}
		if k >= len(s) || s[k] != '=' {
			out = append(out, s[i:j+len(name)]...)
			i = j + len(name)
			continue
		}
		k++
		for k < len(s) && isSWS(s[k]) {
			k++
		}
		out = append(out, s[i:k]...)
		if k < len(s) && s[k] == '"' {
			end := quotedEnd(s, k)
			closed := end-1 > k && s[end-1] == '"'
			inner := s[k+1 : end]
			if closed {
				inner = s[k+1 : end-1]
			}
			out = append(out, '"')
			out = append(out, maskPushToken(string(inner))...)
			if closed {
				out = append(out, '"')
			}
			i = end
			continue
		}
		end := k
		for end < len(s) && !isParamEnd(s[end]) {
			end++
		}
		out = append(out, maskPushToken(string(s[k:end]))...)
		i = end
	}
}

// isParamEnd ends an unquoted parameter value.
func isParamEnd(c byte) bool {
	switch c {
	case ';', '>', '?', ',', '"', ' ', '\t', '\r', '\n':
		return true
	}
	return false
}

// quotedEnd returns the index just after the quoted string starting at
// s[i] == '"' (len(s) if it is not closed).
func quotedEnd(s []byte, i int) int {
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j + 1
		}
	}
	return len(s)
}

// pushTypes are the suffixes of Apple's multi-token form
// ("tokenA:remote&tokenB:voip"); any other colon belongs to the token
// (FCM tokens hold one).
var pushTypes = []string{"remote", "voip"}

// maskPushToken masks a pn-prid or pn-tok value: each token of the
// multi-token form separately, keeping its type.
func maskPushToken(v string) string {
	if v == "" {
		return v
	}
	var b strings.Builder
	for {
		part, rest, more := cutAmp(v)
		tok, typ := cutPushType(part)
		b.WriteString(Mask(tok))
		b.WriteString(typ)
		if !more {
			return b.String()
		}
		b.WriteString(v[len(part) : len(v)-len(rest)])
		v = rest
	}
}

// cutAmp splits at the first "&" or "%26".
func cutAmp(v string) (part, rest string, ok bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == '&' {
			return v[:i], v[i+1:], true
		}
		if v[i] == '%' && i+2 < len(v) && v[i+1] == '2' && v[i+2] == '6' {
			return v[:i], v[i+3:], true
		}
	}
	return v, "", false
}

// cutPushType splits "token:voip" (or "token%3Avoip") into the token and
// its ":voip" suffix.
func cutPushType(part string) (tok, typ string) {
	lower := strings.ToLower(part)
	for _, t := range pushTypes {
		for _, sep := range []string{":", "%3a"} {
			if strings.HasSuffix(lower, sep+t) {
				n := len(part) - len(sep) - len(t)
				return part[:n], part[n:]
			}
		}
	}
	return part, ""
}

// appendMaskedCredentials masks an Authorization or Proxy-Authorization
// value: the digest response and cnonce; for any other scheme (Basic,
// Bearer, ...) everything after the scheme.
func appendMaskedCredentials(out, v []byte) []byte {
	n := 0
	for n < len(v) && !isSWS(v[n]) {
		n++
	}
	scheme := v[:n]
	if strings.EqualFold(string(scheme), "digest") {
		return appendMaskedAuthParams(out, v, "response", "cnonce")
	}
	out = append(out, scheme...)
	if len(scheme) < len(v) {
		out = append(out, " "+hidden...)
	}
	return out
}

// appendMaskedAuthParams appends a comma-separated auth-param list (after
// an optional scheme) with the values of the named parameters hidden.
func appendMaskedAuthParams(out, v []byte, names ...string) []byte {
	i := 0
	for i < len(v) {
		// Separators before a parameter.
		j := i
		for j < len(v) && (isSWS(v[j]) || v[j] == ',') {
			j++
		}
		// Its name.
		k := j
		for k < len(v) && isTokenChar(v[k]) {
			k++
		}
		name := string(v[j:k])
		e := k
		for e < len(v) && isSWS(v[e]) {
			e++
		}
		if k == j || e >= len(v) || v[e] != '=' {
			// Not name=value (the scheme, a token68): copy one word on.
			if k == j {
				k = j + 1
			}
			out = append(out, v[i:k]...)
			i = k
			continue
		}
		e++
		for e < len(v) && isSWS(v[e]) {
			e++
		}
		out = append(out, v[i:e]...)
		secret := false
		for _, n := range names {
			if strings.EqualFold(name, n) {
				secret = true
			}
		}
		end := e
		if end < len(v) && v[end] == '"' {
			end = quotedEnd(v, end)
		} else {
			for end < len(v) && v[end] != ',' && !isSWS(v[end]) {
				end++
			}
		}
		if secret {
			// Unquoted: nothing that looks like a digest value is left.
			out = append(out, hidden...)
		} else {
			out = append(out, v[e:end]...)
		}
		i = end
	}
	return out
}

// isTokenChar reports the characters of an RFC 3261 token.
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	switch c {
	case '-', '.', '!', '%', '*', '_', '+', '`', '\'', '~':
		return true
	}
	return false
}

// maskBodyKeys hides the keying material of an SDP body (SDES a=crypto
// inline keys, a=key-mgmt data, k= keys), wherever such lines appear in
// the body (multipart included). It returns body itself when there is
// none.
func maskBodyKeys(body []byte) []byte {
	if !bytes.Contains(body, []byte("a=")) && !bytes.Contains(body, []byte("k=")) {
		return body
	}
	var out []byte
	changed := false
	for pos := 0; pos < len(body); {
		end, next := lineBreak(body, pos)
		line := body[pos:end]
		masked := maskSDPLine(line)
		if masked != nil && !changed {
			changed = true
			out = append(make([]byte, 0, len(body)), body[:pos]...)
		}
		if changed {
			if masked != nil {
				out = append(out, masked...)
			} else {
				out = append(out, line...)
			}
			out = append(out, body[end:next]...)
		}
		pos = next
	}
	if !changed {
		return body
	}
	return out
}

// maskSDPLine returns the line with its keys hidden, or nil when it holds
// none.
func maskSDPLine(line []byte) []byte {
	switch {
	case hasPrefixFold(line, "a=crypto:"):
		// a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:4;inline:KEY2 ...
		var out []byte
		rest := line
		found := false
		for {
			i := indexFold(rest, "inline:")
			if i < 0 {
				break
			}
			found = true
			i += len("inline:")
			out = append(out, rest[:i]...)
			j := i
			for j < len(rest) && rest[j] != '|' && rest[j] != ';' && !isSWS(rest[j]) {
				j++
			}
			out = append(out, hidden...)
			rest = rest[j:]
		}
		if !found {
			return nil
		}
		return append(out, rest...)
	case hasPrefixFold(line, "a=key-mgmt:"):
		// a=key-mgmt:mikey DATA: keep the protocol id.
		p := len("a=key-mgmt:")
		for p < len(line) && !isSWS(line[p]) {
			p++
		}
		if p == len(line) {
			return nil
		}
		return append(append([]byte(nil), line[:p]...), " "+hidden...)
	case hasPrefixFold(line, "k="):
		// k=clear:KEY, k=base64:KEY, k=uri:URI (k=prompt holds none).
		c := bytes.IndexByte(line, ':')
		if c < 0 {
			return nil
		}
		return append(append([]byte(nil), line[:c+1]...), hidden...)
	}
	return nil
}

// indexFold is bytes.Index for a lower-case ASCII needle, ignoring case.
func indexFold(b []byte, needle string) int {
	for i := 0; i+len(needle) <= len(b); i++ {
		if hasPrefixFold(b[i:], needle) {
			return i
		}
	}
	return -1
}
