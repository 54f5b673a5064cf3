package proxy

import (
	"errors"
	"net"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
)

// AdoptRequest takes over a request whose server transaction lived on
// another node that is gone: raw is the request as that node received it
// (after its route processing), from source over transport. Responses to
// it are written statelessly towards its top Via, so the module that
// adopts it can still deliver it and answer the caller. The adopter must
// call Detach on the returned Request and the function Detach returns
// when finished with it. A CANCEL for it cannot be matched (it went to
// the lost node).
func (s *Server) AdoptRequest(raw []byte, source, transport string) (*Request, error) {
	m, err := sip.ParseMessage(raw)
	if err != nil {
		return nil, err
	}
	req, ok := m.(*sip.Request)
	if !ok || req.Via() == nil || req.CallID() == nil || req.CSeq() == nil {
		return nil, errors.New("proxy: adopted message is not a complete request")
	}
	tp := strings.ToUpper(transport)
	req.SetTransport(tp)
	req.SetSource(source)
	tx := &statelessTx{srv: s, txEnd: newTxEnd()}
	r := &Request{Msg: req, Tx: tx, Received: time.Now(), Transport: tp, Source: source, srv: s}
	r.Trusted = s.trusted(source)
	s.inflight.Add(1)
	r.finish = func() {
		defer s.inflight.Add(-1)
		if !r.answered.Load() {
			r.Respond(500, "Server Internal Error")
		}
		tx.Terminate()
	}
	return r, nil
}

// statelessTx stands in for the server transaction of an adopted request:
// responses go straight to the transport, towards the request's top Via.
type statelessTx struct {
	srv *Server
	txEnd
}

var _ sip.ServerTransaction = (*statelessTx)(nil)

func (t *statelessTx) Respond(res *sip.Response) error {
	via := res.Via()
	if via == nil {
		return errors.New("proxy: response without Via")
	}
	dest := res.Destination()
	if dest == "" {
		dest = responseDest(via, "", "UDP")
	}
	tp := strings.ToUpper(res.Transport())
	if tp == "" {
		tp = strings.ToUpper(via.Transport)
	}
	if l := t.srv.listenerFor("UDP"); tp == "UDP" && l != nil && l.pc != nil {
		ua, err := net.ResolveUDPAddr("udp", dest)
		if err != nil {
			return err
		}
		_, err = l.pc.WriteTo(encode(res), ua)
		return err
	}
	res.SetTransport(tp)
	res.SetDestination(dest)
	return t.srv.writeMsg(res)
}

func (t *statelessTx) Acks() <-chan *sip.Request    { return nil }
func (t *statelessTx) OnCancel(sip.FnTxCancel) bool { return true }
func (t *statelessTx) Terminate()                   { t.end("", nil) }
