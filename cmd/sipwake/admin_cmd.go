package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/sipwake/sipwake/proxy/wake"
)

// The CLI subcommands that call the admin API of a running sipwake (INTERFACE.md "Binary
// and CLI"). They find it through admin.listen and admin.token_file of the configuration
// (-c, SIPWAKE_CONFIG, SIPWAKE_ADMIN_* overrides, else the defaults), or through --admin.
// Exit status: 0 on success, 1 on a usage or config error or an error answer of the API
// (and, for "push test", when any push failed), 2 when the API cannot be reached.

// adminCLI is the state the admin subcommands share.
type adminCLI struct {
	*cli
	url string // --admin; empty: from admin.listen
}

// adminCmds returns the command groups that call the admin API.
func (c *cli) adminCmds() []*cobra.Command {
	a := &adminCLI{cli: c}
	cmds := []*cobra.Command{a.bindingsCmd(), a.pushCmd(), a.callsCmd(), a.messagesCmd(), a.logCmd(),
		a.accountsCmd(), a.registrationsCmd(), a.traceCmd()}
	for _, cmd := range cmds {
		cmd.PersistentFlags().StringVar(&a.url, "admin", "", "admin API URL (http://host:port); default from admin.listen of the config")
	}
	return cmds
}

// client builds the admin API client from the configuration and --admin.
func (a *adminCLI) client() (*adminClient, error) {
	cfg, err := LoadConfig(a.path(), a.env)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			for _, p := range ce.Problems {
				fmt.Fprintln(a.stderr, p.String())
			}
			return nil, &exitError{code: exitConfig}
		}
		return nil, &exitError{code: exitConfig, err: err}
	}
	var base string
	if a.url != "" {
		base, err = parseAdminURL(a.url)
	} else {
		base, err = adminBaseURL(cfg.Admin.Listen)
	}
	if err != nil {
		return nil, &exitError{code: exitConfig, err: err}
	}
	var token string
	if cfg.Admin.TokenFile != "" {
		if token, err = readAdminToken(cfg.Admin.TokenFile); err != nil {
			return nil, &exitError{code: exitConfig, err: err}
		}
	}
	return newAdminClient(base, token), nil
}

// exactArgs requires n positional arguments, named in the message.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return &usageError{fmt.Errorf("%q takes %d argument(s) (%s), got %d", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))}
		}
		return nil
	}
}

// printJSON writes an API answer indented.
func printJSON(w io.Writer, data []byte) error {
	var buf bytes.Buffer
	if err := json.Indent(&buf, bytes.TrimSpace(data), "", "  "); err != nil {
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

// dash shows an empty cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// bindingsPath is the path of one AOR's bindings, the AOR percent-encoded.
func bindingsPath(aor string) string {
	return "/v1/bindings/" + url.PathEscape(aor)
}

func (a *adminCLI) bindingsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bindings",
		Short: "Inspect or remove device registrations (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	var aor, provider string
	list := &cobra.Command{
		Use:   "list",
		Short: "List live bindings, of every AOR or of one",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if aor != "" {
				q.Set("aor", aor)
			}
			if provider != "" {
				q.Set("provider", provider)
			}
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/bindings", q, nil, func(out adminBindings) error {
				return printBindingsTable(a.stdout, out.Bindings)
			})
		},
	}
	list.Flags().StringVar(&aor, "aor", "", "only this address of record")
	list.Flags().StringVar(&provider, "provider", "", "only devices with this push provider (apns, apns.dev, fcm, webpush)")

	show := &cobra.Command{
		Use:   "show AOR",
		Short: "Show every binding of one address of record in detail",
		Args:  exactArgs("AOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return adminDo(cmd.Context(), a, http.MethodGet, bindingsPath(args[0]), nil, nil, func(out adminBindings) error {
				return printBindingsDetail(a.stdout, out.Bindings)
			})
		},
	}

	var instance string
	del := &cobra.Command{
		Use:   "delete AOR",
		Short: "Remove every binding of an address of record, or one device's with --instance",
		Long: `Remove bindings from the store. The device is not told; it registers again at its next
refresh. The registration at the PBX lapses at its own expiry.`,
		Args: exactArgs("AOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if instance != "" {
				q.Set("instance", instance)
			}
			return adminDo(cmd.Context(), a, http.MethodDelete, bindingsPath(args[0]), q, nil, func(out adminDeleted) error {
				if out.Instance != "" {
					_, err := fmt.Fprintf(a.stdout, "deleted binding %s of %s\n", out.Instance, out.AOR)
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "deleted %d binding(s) of %s\n", out.Deleted, out.AOR)
				return err
			})
		},
	}
	del.Flags().StringVar(&instance, "instance", "", "only the binding of this device (the instance column of bindings list)")
	cmd.AddCommand(list, show, del)
	return cmd
}

// pushCell describes a binding's push target in one cell.
func pushCell(p *adminPush) string {
	if p == nil {
		return "-"
	}
	return p.Provider + " " + p.Token
}

func printBindingsTable(w io.Writer, bs []adminBinding) error {
	if len(bs) == 0 {
		_, err := fmt.Fprintln(w, "no bindings")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "AOR\tINSTANCE\tTRANSPORT\tSOURCE\tNODE\tPUSH\tEXPIRES\tUSER-AGENT")
	for _, b := range bs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", b.AOR, b.Instance, dash(b.Transport), dash(b.Source),
			dash(b.Node), pushCell(b.Push), fmtTime(b.ExpiresAt), dash(b.UserAgent))
	}
	return tw.Flush()
}

func printBindingsDetail(w io.Writer, bs []adminBinding) error {
	tw := newTable(w)
	for i, b := range bs {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "aor:\t%s\n", b.AOR)
		fmt.Fprintf(tw, "instance:\t%s\n", b.Instance)
		if b.SIPInstance != "" {
			fmt.Fprintf(tw, "sip instance:\t%s\n", b.SIPInstance)
		}
		if b.RegID != 0 {
			fmt.Fprintf(tw, "reg-id:\t%d\n", b.RegID)
		}
		fmt.Fprintf(tw, "contact:\t%s\n", b.Contact)
		fmt.Fprintf(tw, "transport:\t%s\n", dash(b.Transport))
		fmt.Fprintf(tw, "source:\t%s\n", dash(b.Source))
		fmt.Fprintf(tw, "node:\t%s\n", dash(b.Node))
		fmt.Fprintf(tw, "expires:\t%s\n", fmtTime(b.ExpiresAt))
		fmt.Fprintf(tw, "last seen:\t%s\n", fmtTime(b.LastSeen))
		fmt.Fprintf(tw, "upstream expires:\t%s\n", fmtTime(b.UpstreamExpires))
		fmt.Fprintf(tw, "user agent:\t%s\n", dash(b.UserAgent))
		if p := b.Push; p != nil {
			fmt.Fprintf(tw, "push:\t%s token %s param %s types %s\n", p.Provider, p.Token, dash(p.Param), dash(strings.Join(p.Types, ",")))
		} else {
			fmt.Fprintf(tw, "push:\t-\n")
		}
	}
	return tw.Flush()
}

func (a *adminCLI) pushCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "push",
		Short: "Send test pushes (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	var req pushTestRequest
	test := &cobra.Command{
		Use:   "test (--aor AOR [--instance ID] | --provider P --token T [--param X]) [--type alert|voip]",
		Short: "Send one test push and print each provider's verdict",
		Long: `Send a test push, either to every push-capable device registered under an AOR (or the
one named by --instance), or to an explicit target (--provider, --token, --param).

The default test push is a visible alert on iOS ("sipwake test push") and a data message
elsewhere, with payload event "register": an app that acts on it registers again. With
--type voip an Apple device gets a PushKit VoIP push for an incoming call with a fresh
Call-ID that belongs to no call; the app must report it to CallKit, so the phone rings
briefly. Use it only to check VoIP delivery.

A device that cannot take the push type (an Android device asked for voip, an iPhone that
gave only a VoIP token asked for an alert) is skipped and shown as "not sent". A dead token is
reported (permanent: true) but not removed from the store. Exit status is 0 when every push
sent was accepted by its provider, 1 when any was refused or none could be sent, 2 when the
admin API cannot be reached.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case req.AOR == "" && req.Token == "":
				return &usageError{errors.New("give --aor, or --provider and --token")}
			case req.AOR != "" && (req.Token != "" || req.Provider != "" || req.Param != ""):
				return &usageError{errors.New("--aor excludes --provider, --token and --param")}
			case req.Instance != "" && req.AOR == "":
				return &usageError{errors.New("--instance needs --aor")}
			case req.Token != "" && req.Provider == "":
				return &usageError{errors.New("--token needs --provider")}
			case req.Type != "alert" && req.Type != "voip":
				return &usageError{fmt.Errorf("--type %q: want alert or voip", req.Type)}
			}
			cl, err := a.client()
			if err != nil {
				return err
			}
			var out pushTestResults
			data, err := cl.get(cmd.Context(), http.MethodPost, "/v1/push/test", nil, req, &out)
			if err != nil {
				return err
			}
			if a.output == "json" {
				err = printJSON(a.stdout, data)
			} else {
				err = printPushResults(a.stdout, out.Results)
			}
			if err != nil {
				return err
			}
			sent, failed := 0, 0
			for _, r := range out.Results {
				if r.Sent {
					sent++
					if !r.OK {
						failed++
					}
				}
			}
			switch {
			case failed > 0:
				return &exitError{code: exitConfig, err: fmt.Errorf("%d of %d test push(es) failed", failed, sent)}
			case sent == 0:
				return &exitError{code: exitConfig, err: errors.New("no test push was sent: no device accepts this push type")}
			}
			return nil
		},
	}
	f := test.Flags()
	f.StringVar(&req.AOR, "aor", "", "push every push-capable device of this address of record")
	f.StringVar(&req.Instance, "instance", "", "with --aor: only this device (the instance column of bindings list)")
	f.StringVar(&req.Provider, "provider", "", "explicit target: apns, apns.dev, fcm, webpush or webhook")
	f.StringVar(&req.Token, "token", "", "explicit target: the device token (pn-prid)")
	f.StringVar(&req.Param, "param", "", "explicit target: pn-param (APNs TEAMID.bundle.id, FCM project id)")
	f.StringVar(&req.Type, "type", "alert", "alert, or voip (Apple devices; rings the phone)")
	cmd.AddCommand(test)
	return cmd
}

// pushVerdict describes a test push result in one cell.
func pushVerdict(r pushTestResult) string {
	if r.OK {
		return "ok (" + strconv.Itoa(r.Status) + ")"
	}
	if !r.Sent {
		return r.Error
	}
	var parts []string
	if r.Reason != "" {
		parts = append(parts, r.Reason)
	}
	if r.Status != 0 {
		parts = append(parts, "status "+strconv.Itoa(r.Status))
	}
	if r.Permanent {
		parts = append(parts, "token is dead")
	}
	s := "failed: " + strings.Join(parts, ", ")
	if r.Error != "" {
		s += ": " + r.Error
	}
	return s
}

func printPushResults(w io.Writer, rs []pushTestResult) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "AOR\tINSTANCE\tPROVIDER\tTOKEN\tTYPE\tRESULT")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", dash(r.AOR), dash(r.Instance), r.Provider, dash(r.Token), r.Type, pushVerdict(r))
	}
	return tw.Flush()
}

func (a *adminCLI) callsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "calls",
		Short: "Calls held while devices wake (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "held",
		Short: "List the INVITEs this node holds while it wakes devices",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/calls/held", nil, nil, func(out adminHeld) error {
				return printHeld(a.stdout, out.Calls)
			})
		},
	})
	return cmd
}

func printHeld(w io.Writer, calls []wake.HeldInfo) error {
	if len(calls) == 0 {
		_, err := fmt.Fprintln(w, "no held calls")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "CALL-ID\tAOR\tNODE\tRECEIVED\tDEADLINE\tDEVICES\tPUSHED\tSTATE")
	for _, c := range calls {
		state := "held"
		if c.Finished {
			state = "finished"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\n", c.CallID, c.AOR, dash(c.Node), fmtTime(c.Received),
			fmtTime(c.Deadline), c.Devices, c.Pushed, state)
	}
	return tw.Flush()
}

func (a *adminCLI) messagesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "messages",
		Short: "MESSAGEs stored for sleeping devices (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "pending",
		Short: "List the MESSAGEs stored for sleeping devices",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/messages/pending", nil, nil, func(out adminPending) error {
				if len(out.Messages) == 0 {
					_, err := fmt.Fprintln(a.stdout, "no pending messages")
					return err
				}
				tw := newTable(a.stdout)
				fmt.Fprintln(tw, "ID\tAOR\tSENDER\tRECEIVED\tEXPIRES\tPENDING\tDELIVERED\tATTEMPTS")
				for _, m := range out.Messages {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", m.ID, m.AOR, dash(m.Sender), fmtTime(m.Received),
						fmtTime(m.ExpiresAt), m.Pending, m.Delivered, m.Attempts)
				}
				return tw.Flush()
			})
		},
	})
	return cmd
}

func (a *adminCLI) logCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "log",
		Short: "The running daemon's log level (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "level [debug|info|warn|error]",
		Short: "Print the running daemon's log level, or change it",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return &usageError{fmt.Errorf("%q takes at most one argument (the level), got %d", cmd.CommandPath(), len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			method, body := http.MethodGet, any(nil)
			if len(args) == 1 {
				method, body = http.MethodPut, adminLevel{Level: args[0]}
			}
			return adminDo(cmd.Context(), a, method, "/v1/log/level", nil, body, func(out adminLevel) error {
				if method == http.MethodPut {
					_, err := fmt.Fprintf(a.stdout, "log level set to %s\n", out.Level)
					return err
				}
				_, err := fmt.Fprintf(a.stdout, "log level: %s\n", out.Level)
				return err
			})
		},
	})
	return cmd
}
