package proxy

import (
	"sync"

	"github.com/emiago/sipgo/sip"
)

// txEnd is the end of a transaction sipwake runs itself (light and
// stateless ones): Done, Err, and the OnTerminate callbacks, called once.
type txEnd struct {
	endMu sync.Mutex
	once  sync.Once
	done  chan struct{}
	err   error
	onT   []sip.FnTxTerminate
}

func newTxEnd() txEnd { return txEnd{done: make(chan struct{})} }

func (e *txEnd) Done() <-chan struct{} { return e.done }

func (e *txEnd) Err() error {
	e.endMu.Lock()
	defer e.endMu.Unlock()
	return e.err
}

func (e *txEnd) OnTerminate(f sip.FnTxTerminate) bool {
	e.endMu.Lock()
	defer e.endMu.Unlock()
	select {
	case <-e.done:
		return false
	default:
	}
	e.onT = append(e.onT, f)
	return true
}

// end terminates the transaction with err and runs the callbacks, once.
func (e *txEnd) end(key string, err error) {
	e.once.Do(func() {
		e.endMu.Lock()
		e.err = err
		close(e.done)
		fs := e.onT
		e.endMu.Unlock()
		for _, f := range fs {
			f(key, err)
		}
	})
}
