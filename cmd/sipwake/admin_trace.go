package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/sipwake/sipwake/proxy"
)

// The SIP trace switches of the admin API and their CLI. A switch logs, at info level and
// with secrets masked, every SIP message of one AOR (From, To or Request-URI) or of one
// Call-ID that this node receives or sends, until it expires (at most proxy.MaxTraceDuration).
// Switches belong to the node whose admin API set them and are lost when it stops; at
// log level debug every message is logged anyway.
//
//	PUT    /v1/trace {"aor": AOR | "call_id": ID, "duration": "5m"}   the switch: {"id", "aor"|"call_id", "expires_at"}
//	GET    /v1/trace                                                   {"traces": [switch...]}
//	DELETE /v1/trace[?id=ID]                                           {"cleared": n}
//
//	sipwake trace --aor AOR | --call-id ID [--for 5m]
//	sipwake trace list
//	sipwake trace off [--id ID]

// traceSwitches is what the admin API needs of the proxy's tap.
type traceSwitches interface {
	AddTrace(sw proxy.TraceSwitch, d time.Duration) (proxy.TraceSwitch, error)
	Traces() []proxy.TraceSwitch
	ClearTraces(id string) int
}

var _ traceSwitches = (*proxy.Tap)(nil)

// adminTraceRequest is the body of PUT /v1/trace.
type adminTraceRequest struct {
	AOR      string `json:"aor,omitempty"`
	CallID   string `json:"call_id,omitempty"`
	Duration string `json:"duration,omitempty"`
}

// adminTrace is one trace switch.
type adminTrace struct {
	ID        string    `json:"id"`
	AOR       string    `json:"aor,omitempty"`
	CallID    string    `json:"call_id,omitempty"`
	ExpiresAt time.Time `json:"expires_at"`
}

type adminTraces struct {
	Traces []adminTrace `json:"traces"`
}

type adminTracesCleared struct {
	Cleared int `json:"cleared"`
}

func toAdminTrace(sw proxy.TraceSwitch) adminTrace {
	return adminTrace{ID: sw.ID, AOR: sw.AOR, CallID: sw.CallID, ExpiresAt: sw.Expires.UTC()}
}

// traceSet answers 503 when the process has no trace switches.
func (s *adminServer) traceSet(w http.ResponseWriter) bool {
	if s.deps.Trace == nil {
		writeAdminError(w, http.StatusServiceUnavailable, "SIP trace switches are not available in this process")
		return false
	}
	return true
}

func (s *adminServer) putTrace(w http.ResponseWriter, r *http.Request) {
	if !s.traceSet(w) {
		return
	}
	var req adminTraceRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, http.StatusBadRequest, "request body: %v", err)
		return
	}
	req.AOR, req.CallID = strings.TrimSpace(req.AOR), strings.TrimSpace(req.CallID)
	if (req.AOR == "") == (req.CallID == "") {
		writeAdminError(w, http.StatusBadRequest, "give exactly one of aor and call_id")
		return
	}
	sw := proxy.TraceSwitch{CallID: req.CallID}
	if req.AOR != "" {
		aor, err := parseAOR(req.AOR)
		if err != nil {
			writeAdminError(w, http.StatusBadRequest, "%v", err)
			return
		}
		sw.AOR = aor
	}
	d := proxy.DefaultTraceDuration
	if req.Duration != "" {
		var err error
		if d, err = time.ParseDuration(req.Duration); err != nil || d <= 0 {
			writeAdminError(w, http.StatusBadRequest, "duration %q: want a positive duration such as \"5m\"", req.Duration)
			return
		}
	}
	if d > proxy.MaxTraceDuration {
		writeAdminError(w, http.StatusBadRequest, "duration %s: at most %s", d, proxy.MaxTraceDuration)
		return
	}
	on, err := s.deps.Trace.AddTrace(sw, d)
	switch {
	case errors.Is(err, proxy.ErrTraceFull):
		writeAdminError(w, http.StatusConflict, "too many trace switches on; turn some off first")
		return
	case err != nil:
		writeAdminError(w, http.StatusBadRequest, "%s", strings.TrimPrefix(err.Error(), "proxy: "))
		return
	}
	s.log.Info("trace switched on", zap.String("id", on.ID), zap.String(proxy.FieldAOR, on.AOR),
		zap.String(proxy.FieldCallID, on.CallID), zap.Time("expires_at", on.Expires))
	writeAdminJSON(w, http.StatusOK, toAdminTrace(on))
}

func (s *adminServer) listTraces(w http.ResponseWriter, _ *http.Request) {
	if !s.traceSet(w) {
		return
	}
	out := adminTraces{Traces: []adminTrace{}}
	for _, sw := range s.deps.Trace.Traces() {
		out.Traces = append(out.Traces, toAdminTrace(sw))
	}
	writeAdminJSON(w, http.StatusOK, out)
}

func (s *adminServer) clearTraces(w http.ResponseWriter, r *http.Request) {
	if !s.traceSet(w) {
		return
	}
	id := r.URL.Query().Get("id")
	n := s.deps.Trace.ClearTraces(id)
	if id != "" && n == 0 {
		writeAdminError(w, http.StatusNotFound, "no trace switch %q is on", id)
		return
	}
	if n > 0 {
		s.log.Info("trace switched off", zap.Int("switches", n))
	}
	writeAdminJSON(w, http.StatusOK, adminTracesCleared{Cleared: n})
}

func (a *adminCLI) traceCmd() *cobra.Command {
	var aor, callID, dur string
	cmd := &cobra.Command{
		Use:   "trace (--aor AOR | --call-id ID) [--for 5m]",
		Short: "Log the SIP messages of one AOR or one call at info level for a while (through the admin API)",
		Long: `Turn a trace switch on: every SIP message this node receives or sends whose From, To or
Request-URI names the AOR, or whose Call-ID is the one given, is logged at info level
(logger "trace", message "sip message", secrets masked) until the switch expires: --for,
default 5m, at most 1h. The switch lives in the node whose admin API is called.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (aor == "") == (callID == "") {
				return &usageError{errors.New("give exactly one of --aor and --call-id")}
			}
			return adminDo(cmd.Context(), a, http.MethodPut, "/v1/trace", nil, adminTraceRequest{AOR: aor, CallID: callID, Duration: dur}, func(out adminTrace) error {
				what := out.AOR
				if what == "" {
					what = "call " + out.CallID
				}
				_, err := fmt.Fprintf(a.stdout, "tracing %s until %s (switch %s)\n", what, fmtTime(out.ExpiresAt), out.ID)
				return err
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&aor, "aor", "", "address of record whose messages are logged (sip:user@domain or user@domain)")
	f.StringVar(&callID, "call-id", "", "Call-ID whose messages are logged")
	f.StringVar(&dur, "for", "", "how long the switch stays on (default 5m, at most 1h)")

	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the trace switches on",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/trace", nil, nil, func(out adminTraces) error {
				if len(out.Traces) == 0 {
					_, err := fmt.Fprintln(a.stdout, "no trace switches on")
					return err
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "ID\tAOR\tCALL-ID\tEXPIRES")
				for _, t := range out.Traces {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, dash(t.AOR), dash(t.CallID), fmtTime(t.ExpiresAt))
				}
				return tw.Flush()
			})
		},
	})

	var id string
	off := &cobra.Command{
		Use:   "off [--id ID]",
		Short: "Turn every trace switch off, or one",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if id != "" {
				q.Set("id", id)
			}
			return adminDo(cmd.Context(), a, http.MethodDelete, "/v1/trace", q, nil, func(out adminTracesCleared) error {
				_, err := fmt.Fprintf(a.stdout, "turned %d trace switch(es) off\n", out.Cleared)
				return err
			})
		},
	}
	off.Flags().StringVar(&id, "id", "", "only this switch")
	cmd.AddCommand(off)
	return cmd
}
