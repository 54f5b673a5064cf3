package proxy

import (
	"bytes"
	"strconv"
	"strings"
)

// rawMessage locates the parts of a SIP message in its bytes without
// parsing it: the tap reads the Call-ID, method and addresses of what
// crossed the wire from it, and MaskMessage rewrites it. It accepts what
// a lenient parser would (LF or CRLF line ends, folded headers, compact
// header names, any case) and never fails: a message without a blank line
// is all headers.
type rawMessage struct {
	data    []byte
	lineEnd int // end of the start line (before its line break)
	first   int // start of the first header line
	headers []rawHeader
	blank   int // start of the blank line ending the headers (len(data) if none)
	body    int // start of the body (len(data) if none)
}

// rawHeader is one header field, folded continuation lines included.
type rawHeader struct {
	name  string // canonical for the headers in knownHeaders ("i" is "call-id"), else ""
	start int    // first byte of the name
	value int    // first byte of the value, after the colon and white space
	end   int    // end of the value, before the line break of its last line
	next  int    // start of the following line
}

// lineBreak returns the end of the line starting at from (before "\r\n" or
// "\n") and the start of the next line.
func lineBreak(b []byte, from int) (end, next int) {
	i := bytes.IndexByte(b[from:], '\n')
	if i < 0 {
		return len(b), len(b)
	}
	end, next = from+i, from+i+1
	if end > from && b[end-1] == '\r' {
		end--
	}
	return end, next
}

// scanMessage locates the start line, the header fields and the body of b.
func scanMessage(b []byte) rawMessage {
	m := rawMessage{data: b, blank: len(b), body: len(b), headers: make([]rawHeader, 0, 24)}
	var pos int
	m.lineEnd, pos = lineBreak(b, 0)
	m.first = pos
	for pos < len(b) {
		end, next := lineBreak(b, pos)
		if end == pos {
			m.blank, m.body = pos, next
			return m
		}
		h := rawHeader{start: pos, end: end, next: next}
		// Continuation lines start with white space (RFC 3261 §7.3.1).
		for h.next < len(b) && (b[h.next] == ' ' || b[h.next] == '\t') {
			h.end, h.next = lineBreak(b, h.next)
		}
		if colon := bytes.IndexByte(b[pos:h.end], ':'); colon >= 0 {
			h.name = canonicalHeader(bytes.TrimRight(b[pos:pos+colon], " \t"))
			h.value = pos + colon + 1
			for h.value < h.end && isSWS(b[h.value]) {
				h.value++
			}
		} else {
			h.value = h.end
		}
		m.headers = append(m.headers, h)
		pos = h.next
	}
	return m
}

// knownHeaders are the headers the tap and MaskMessage look at, by their
// canonical (lower-case, long) names.
var knownHeaders = []string{
	"call-id", "cseq", "from", "to", "contact", "via", "content-length", "content-type", "subject",
	"authorization", "proxy-authorization", "authentication-info", "proxy-authentication-info",
	"x-sipwake-on-behalf",
}

// compactHeaders maps the compact forms (RFC 3261 §7.3.3) of knownHeaders.
var compactHeaders = [256]string{
	'i': "call-id", 'f': "from", 't': "to", 'm': "contact", 'v': "via", 'l': "content-length",
	'c': "content-type", 's': "subject",
}

// canonicalHeader returns the canonical name of a header of knownHeaders
// written in any case or its compact form, else "" (without allocating).
func canonicalHeader(name []byte) string {
	if len(name) == 1 {
		c := name[0]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		return compactHeaders[c]
	}
	for _, k := range knownHeaders {
		if len(k) == len(name) && hasPrefixFold(name, k) {
			return k
		}
	}
	return ""
}

// header returns the value of the first header named name (one of
// knownHeaders), folds and surrounding white space removed.
func (m *rawMessage) header(name string) string {
	for _, h := range m.headers {
		if h.name == name {
			return unfold(m.data[h.value:h.end])
		}
	}
	return ""
}

// isMessage reports a MESSAGE request or a response to one (by its CSeq).
func (m *rawMessage) isMessage() bool {
	if bytes.HasPrefix(m.data, []byte("MESSAGE ")) {
		return true
	}
	if !bytes.HasPrefix(m.data, []byte("SIP/2.0 ")) {
		return false
	}
	for _, h := range m.headers {
		if h.name == "cseq" {
			return bytes.HasSuffix(bytes.TrimRight(m.data[h.value:h.end], " \t"), []byte(" MESSAGE"))
		}
	}
	return false
}

// unfold joins a folded value's lines with one space and trims it.
func unfold(v []byte) string {
	if bytes.IndexByte(v, '\n') < 0 {
		return strings.TrimSpace(string(v))
	}
	return strings.Join(strings.Fields(string(v)), " ")
}

// startLine returns the request's method and Request-URI, or the
// response's status code.
func (m *rawMessage) startLine() (method, ruri string, status int) {
	line := string(m.data[:m.lineEnd])
	if rest, ok := strings.CutPrefix(line, "SIP/2.0 "); ok {
		code, _, _ := strings.Cut(strings.TrimLeft(rest, " "), " ")
		status, _ = strconv.Atoi(code)
		return "", "", status
	}
	method, rest, _ := strings.Cut(line, " ")
	ruri, _, _ = strings.Cut(strings.TrimLeft(rest, " "), " ")
	return method, ruri, 0
}

// cseq returns the CSeq number and method.
func (m *rawMessage) cseq() (uint32, string) {
	num, method, _ := strings.Cut(m.header("cseq"), " ")
	n, _ := strconv.ParseUint(num, 10, 32)
	return uint32(n), strings.TrimSpace(method)
}

// looksLikeStart reports whether b starts with a SIP start line (a status
// line or "METHOD uri SIP/2.0"), as far as b goes.
func looksLikeStart(b []byte) bool {
	end, _ := lineBreak(b, 0)
	line := b[:end]
	if bytes.HasPrefix(line, []byte("SIP/2.0 ")) {
		return true
	}
	if end == len(b) {
		// The line is not complete yet: accept a plausible beginning.
		if len(line) < 8 {
			return bytes.HasPrefix([]byte("SIP/2.0 "), line) || isUpperToken(line)
		}
		sp := bytes.IndexByte(line, ' ')
		return sp > 0 && isUpperToken(line[:sp])
	}
	sp := bytes.IndexByte(line, ' ')
	return sp > 0 && isUpperToken(line[:sp]) && bytes.HasSuffix(line, []byte(" SIP/2.0"))
}

func isUpperToken(b []byte) bool {
	for _, c := range b {
		if (c < 'A' || c > 'Z') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// nameAddrURI returns the URI of a From, To or Contact value: between
// angle brackets, else up to the header parameters.
func nameAddrURI(v string) string {
	if i := strings.IndexByte(v, '<'); i >= 0 {
		rest := v[i+1:]
		if j := strings.IndexByte(rest, '>'); j >= 0 {
			return rest[:j]
		}
		return rest
	}
	u, _, _ := strings.Cut(v, ";")
	return strings.TrimSpace(u)
}

// uriAOR returns the address of record a sip: or sips: URI names, as
// sip:user@host with the user part unescaped and the host in lower case,
// or "" when the URI has no user part. Traces match on it, so it only
// has to be the same for the same address, written in any of the ways a
// UA may write it.
func uriAOR(u string) string {
	u = strings.TrimSpace(u)
	scheme, rest, ok := strings.Cut(u, ":")
	if !ok || (!strings.EqualFold(scheme, "sip") && !strings.EqualFold(scheme, "sips")) {
		return ""
	}
	rest, _, _ = strings.Cut(rest, "?")
	rest, _, _ = strings.Cut(rest, ";")
	user, host, ok := strings.Cut(rest, "@")
	if !ok || user == "" {
		return ""
	}
	user, _, _ = strings.Cut(user, ":") // user:password
	if strings.HasPrefix(host, "[") {
		if i := strings.IndexByte(host, ']'); i >= 0 {
			host = host[:i+1]
		}
	} else {
		host, _, _ = strings.Cut(host, ":")
	}
	if host == "" {
		return ""
	}
	return "sip:" + unescapeUser(user) + "@" + strings.ToLower(host)
}

// unescapeUser decodes %XX escapes; a broken escape is kept as written.
func unescapeUser(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if hi, lo := unhex(s[i+1]), unhex(s[i+2]); hi >= 0 && lo >= 0 {
				b.WriteByte(byte(hi<<4 | lo))
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// isSWS reports white space, line breaks included (SWS/LWS spanning a fold).
func isSWS(c byte) bool {
	return c == ' ' || c == '\t' || c == '\r' || c == '\n'
}

// hasPrefixFold reports whether b starts with the lower-case ASCII prefix.
func hasPrefixFold(b []byte, prefix string) bool {
	if len(b) < len(prefix) {
		return false
	}
	for i := 0; i < len(prefix); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != prefix[i] {
			return false
		}
	}
	return true
}
