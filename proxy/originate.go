package proxy

import (
	"context"
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Send originates a request on sipwake's own behalf — a stored MESSAGE
// delivered to a device that woke up — and waits for its final response
// or ctx. The request keeps its From, To, Call-ID, CSeq and body (a
// device de-duplicates a re-delivery by them); its Vias and Routes are
// replaced by one Via of ours, its Request-URI by t.URI, its
// Max-Forwards reset. A device flow that is gone gives ErrFlowGone
// without sending anything.
func (s *Server) Send(ctx context.Context, req *sip.Request, t Target) (*sip.Response, error) {
	tp := strings.ToUpper(t.Transport)
	if tp == "" {
		tp = "UDP"
	}
	if t.Flow && !s.FlowAlive(tp, t.Dest) {
		return nil, ErrFlowGone
	}
	l := s.listenerFor(tp)
	if l == nil {
		return nil, errors.New("proxy: no listener for transport " + tp)
	}
	out := req.Clone()
	if t.URI != nil {
		out.Recipient = *t.URI.Clone()
	}
	for out.RemoveHeader("Via") {
	}
	for out.RemoveHeader("Route") {
	}
	for out.RemoveHeader("Record-Route") {
	}
	out.RemoveHeader("Max-Forwards")
	mf := sip.MaxForwardsHeader(70)
	out.PrependHeader(&mf)
	addressOut(out, l, tp, "o."+randomToken(), t.Dest)
	s.metrics.request(out.Method, dirOut)
	tx, responses, release, err := s.launch(out, tp)
	if err != nil {
		return nil, err
	}
	defer release()
	for {
		select {
		case res := <-responses:
			s.metrics.response(out.Method, res.StatusCode, dirIn)
			if res.StatusCode >= 200 {
				return res, nil
			}
		case <-tx.Done():
			select {
			case res := <-responses:
				if res.StatusCode >= 200 {
					return res, nil
				}
			default:
			}
			if err := tx.Err(); err != nil {
				return nil, err
			}
			return nil, sip.ErrTransactionTimeout
		case <-ctx.Done():
			tx.Terminate()
			return nil, ctx.Err()
		}
	}
}
