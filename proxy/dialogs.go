package proxy

import (
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// dialogMaxAge is how long a dialog that was never seen to end (its BYE
// went another way, or never came) is still counted as a call in
// progress.
const dialogMaxAge = 4 * time.Hour

// dialogs counts the INVITE dialogs established through this proxy (a
// 2xx to an initial INVITE was sent back) and not yet ended by a BYE, so
// that a drain lets the calls in progress end before the process exits:
// their in-dialog requests need this node (Record-Route, and the devices'
// connections).
type dialogs struct {
	mu   sync.Mutex
	m    map[string]time.Time
	adds int
}

// dialogKey names a dialog by Call-ID and both tags, in either direction.
func dialogKey(res *sip.Response) (string, bool) {
	from, to, cid := res.From(), res.To(), res.CallID()
	if from == nil || to == nil || cid == nil {
		return "", false
	}
	a, _ := from.Params.Get("tag")
	b, _ := to.Params.Get("tag")
	if a == "" || b == "" {
		return "", false
	}
	if a > b {
		a, b = b, a
	}
	return cid.Value() + "\x00" + a + "\x00" + b, true
}

func (d *dialogs) add(res *sip.Response, now time.Time) {
	k, ok := dialogKey(res)
	if !ok {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]time.Time{}
	}
	if _, seen := d.m[k]; !seen {
		d.m[k] = now
		if d.adds++; d.adds%1024 == 0 {
			d.pruneLocked(now)
		}
	}
}

func (d *dialogs) remove(res *sip.Response) {
	if k, ok := dialogKey(res); ok {
		d.mu.Lock()
		delete(d.m, k)
		d.mu.Unlock()
	}
}

// count is the number of dialogs in progress at now.
func (d *dialogs) count(now time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pruneLocked(now)
	return len(d.m)
}

func (d *dialogs) pruneLocked(now time.Time) {
	for k, t := range d.m {
		if now.Sub(t) > dialogMaxAge {
			delete(d.m, k)
		}
	}
}

// track follows dialogs through the final responses sent upstream: a 2xx
// to an initial INVITE starts one, any final response to a BYE ends it.
func (r *Request) track(res *sip.Response) {
	switch {
	case res.StatusCode < 200:
	case r.Msg.Method == sip.INVITE && res.IsSuccess() && !r.InDialog():
		r.srv.dialogs.add(res, time.Now())
	case r.Msg.Method == sip.BYE:
		r.srv.dialogs.remove(res)
	}
}

// Dialogs is the number of calls in progress through this node: INVITE
// dialogs established through it and not yet ended by a BYE (forgotten
// after 4 hours).
func (s *Server) Dialogs() int { return s.dialogs.count(time.Now()) }
