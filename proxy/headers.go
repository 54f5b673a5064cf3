package proxy

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// headerList is a parsed SIP message: *sip.Request or *sip.Response.
type headerList interface {
	Headers() []sip.Header
}

// FirstHeader is the first header of m called name, in any case, or nil.
// It matches as sipgo's GetHeader does, without its cost: GetHeader
// lowercases the name of every header it passes that is not in its short
// table of common ones (Authorization, Expires, User-Agent, anything with
// a hyphen), one allocation each, and a REGISTER is read a dozen times.
func FirstHeader(m headerList, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}

// HeadersNamed is every header of m called name, in any case, in order
// (sipgo's GetHeaders without its allocations; nil when there is none).
func HeadersNamed(m headerList, name string) []sip.Header {
	var out []sip.Header
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			out = append(out, h)
		}
	}
	return out
}
