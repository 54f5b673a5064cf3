package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/sipwake/sipwake/registrar"
)

// The CLI side of the accounts and registrations endpoints (admin_accounts.go):
//
//	sipwake accounts set AOR (--ha1-file F [--ha1-sha256-file F2] | --password-file F) [--realm R] [--username U]
//	sipwake accounts delete AOR | list | rekey
//	sipwake registrations list [--aor AOR]
//
// Secrets are read from files only, never from the command line, and no message ever
// quotes a file's content.

// accountsPath is the path of one AOR's account, the AOR percent-encoded.
func accountsPath(aor string) string {
	return "/v1/accounts/" + url.PathEscape(aor)
}

// maxSecretFile bounds a password or HA1 file.
const maxSecretFile = 4 << 10

// readSecretFile reads a small file named by flag; the error names the file, never its
// content.
func readSecretFile(flag, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s: %v", flag, err)}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s: %v", flag, err)}
	}
	if len(b) > maxSecretFile {
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s %s: longer than %d bytes", flag, path, maxSecretFile)}
	}
	return string(b), nil
}

// readHA1File reads an HA1 file: one line, the lowercase hex digest of
// user:realm:password for algorithm (surrounding white space ignored).
func readHA1File(flag, path, algorithm string) (string, error) {
	s, err := readSecretFile(flag, path)
	if err != nil {
		return "", err
	}
	s = strings.TrimSpace(s)
	n := 32
	if algorithm == registrar.AlgSHA256 {
		n = 64
	}
	switch {
	case strings.ContainsAny(s, "\r\n"):
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s %s: holds more than one line; want one line, the %s digest of user:realm:password", flag, path, algorithm)}
	case !registrar.ValidHA1(algorithm, strings.ToLower(s)):
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s %s: want %d hex digits, the %s digest of user:realm:password (%d characters found)", flag, path, n, algorithm, len(s))}
	}
	return strings.ToLower(s), nil
}

// readPasswordFile reads a password file: its content with one trailing newline ("\n" or
// "\r\n") removed, nothing else.
func readPasswordFile(flag, path string) (string, error) {
	s, err := readSecretFile(flag, path)
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(s, "\r\n") {
		s = s[:len(s)-2]
	} else {
		s = strings.TrimSuffix(s, "\n")
	}
	if s == "" {
		return "", &exitError{code: exitConfig, err: fmt.Errorf("%s %s: the password is empty", flag, path)}
	}
	return s, nil
}

func (a *adminCLI) accountsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "accounts",
		Short: "On-behalf credentials sipwake registers with at the PBX (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}

	var ha1File, ha1SHA256File, passwordFile, realm, username string
	set := &cobra.Command{
		Use:   "set AOR (--ha1-file F [--ha1-sha256-file F2] | --password-file F) [--realm R] [--username U]",
		Short: "Store the credentials sipwake answers the PBX's challenges with for one AOR",
		Long: `Store the digest credentials sipwake uses to keep an AOR registered at the PBX while its
devices sleep (registrar.mode on_behalf). They are encrypted with registrar.credentials.key_file
before they reach the store; no command or API answer shows them again.

--ha1-file holds one line, the lowercase hex MD5 digest of user:realm:password
(printf '%s' '1001:pbx.example.com:secret' | md5sum | cut -d' ' -f1 > 1001.ha1);
--ha1-sha256-file the SHA-256 one (sha256sum), for a PBX that challenges with SHA-256. Without --realm an HA1 applies to whatever
realm the PBX challenges with; with --realm only to that realm.

--password-file holds the password (one trailing newline is removed, nothing else). It is
turned into MD5 and SHA-256 HA1s at once and kept nowhere; without --realm the realm is the
AOR's domain.

--username is the digest user name when it is not the AOR's user part.`,
		Args: exactArgs("AOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case ha1File != "" && passwordFile != "":
				return &usageError{errors.New("give either --ha1-file or --password-file, not both")}
			case ha1File == "" && passwordFile == "":
				return &usageError{errors.New("give --ha1-file (and --ha1-sha256-file) or --password-file")}
			case ha1SHA256File != "" && ha1File == "":
				return &usageError{errors.New("--ha1-sha256-file goes with --ha1-file")}
			}
			req := accountRequest{Username: username}
			if passwordFile != "" {
				pw, err := readPasswordFile("--password-file", passwordFile)
				if err != nil {
					return err
				}
				req.Password, req.Realm = &pw, realm
			} else {
				h, err := readHA1File("--ha1-file", ha1File, registrar.AlgMD5)
				if err != nil {
					return err
				}
				req.HA1 = append(req.HA1, accountHA1{Realm: realm, Algorithm: registrar.AlgMD5, HA1: h})
				if ha1SHA256File != "" {
					h, err := readHA1File("--ha1-sha256-file", ha1SHA256File, registrar.AlgSHA256)
					if err != nil {
						return err
					}
					req.HA1 = append(req.HA1, accountHA1{Realm: realm, Algorithm: registrar.AlgSHA256, HA1: h})
				}
			}
			return adminDo(cmd.Context(), a, http.MethodPut, accountsPath(args[0]), nil, req, func(out adminAccount) error {
				_, err := fmt.Fprintf(a.stdout, "stored credentials for %s (realms %s, algorithms %s, key %s)\n",
					out.AOR, realmsCell(out.Realms), dash(strings.Join(out.Algorithms, ",")), dash(out.KeyID))
				return err
			})
		},
	}
	f := set.Flags()
	f.StringVar(&ha1File, "ha1-file", "", "file holding the lowercase hex MD5 of user:realm:password")
	f.StringVar(&ha1SHA256File, "ha1-sha256-file", "", "with --ha1-file: file holding the lowercase hex SHA-256 of user:realm:password")
	f.StringVar(&passwordFile, "password-file", "", "file holding the password (turned into HA1s at once, kept nowhere)")
	f.StringVar(&realm, "realm", "", "digest realm; default: any realm for HA1 files, the AOR's domain for a password")
	f.StringVar(&username, "username", "", "digest user name; default: the AOR's user part")

	del := &cobra.Command{
		Use:   "delete AOR",
		Short: "Remove the stored credentials of an AOR",
		Long: `Remove an AOR's on-behalf credentials from the store. From then on sipwake cannot answer
the PBX's challenges when it refreshes that AOR's registration itself.`,
		Args: exactArgs("AOR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := a.client()
			if err != nil {
				return err
			}
			if _, err := cl.get(cmd.Context(), http.MethodDelete, accountsPath(args[0]), nil, nil, nil); err != nil {
				return err
			}
			aor, perr := parseAOR(args[0])
			if perr != nil {
				aor = args[0]
			}
			if a.output == "json" {
				return writeJSON(a.stdout, struct {
					AOR     string `json:"aor"`
					Deleted bool   `json:"deleted"`
				}{aor, true})
			}
			_, err = fmt.Fprintf(a.stdout, "deleted the credentials of %s\n", aor)
			return err
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the AORs with stored credentials (never the credentials themselves)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/accounts", nil, nil, func(out adminAccounts) error {
				return printAccounts(a.stdout, out.Accounts)
			})
		},
	}

	rekey := &cobra.Command{
		Use:   "rekey",
		Short: "Re-encrypt every stored account under the current key (registrar.credentials.key_file)",
		Long: `After a key rotation (the new key in registrar.credentials.key_file, the previous ones in
old_key_files), re-encrypt every account still sealed under an old key with the new one.
Once it succeeded, the old key files can be removed from the configuration. Accounts that no
configured key opens are listed and left as they are (exit status 1).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return adminDo(cmd.Context(), a, http.MethodPost, "/v1/accounts/rekey", nil, nil, func(out adminResealed) error {
				_, err := fmt.Fprintf(a.stdout, "re-encrypted %d account(s) under the current key\n", out.Resealed)
				return err
			})
		},
	}
	cmd.AddCommand(set, del, list, rekey)
	return cmd
}

// realmsCell shows realms in one cell: "" (any realm the PBX challenges with) as "(any)".
func realmsCell(realms []string) string {
	if len(realms) == 0 {
		return "-"
	}
	out := make([]string, len(realms))
	for i, r := range realms {
		if r == "" {
			r = "(any)"
		}
		out[i] = r
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func printAccounts(w io.Writer, as []adminAccount) error {
	if len(as) == 0 {
		_, err := fmt.Fprintln(w, "no accounts")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "AOR\tREALMS\tALGORITHMS\tKEY\tUPDATED\tSTATE\tUPSTREAM-EXPIRES")
	for _, ac := range as {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ac.AOR, realmsCell(ac.Realms), dash(strings.Join(ac.Algorithms, ",")),
			dash(ac.KeyID), fmtTime(ac.Updated), dash(ac.State), fmtTime(ac.UpstreamExpires))
	}
	return tw.Flush()
}

func (a *adminCLI) registrationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registrations",
		Short: "What sipwake keeps alive at the PBX for sleeping devices (through the admin API)",
		Args:  noArgs,
		RunE:  showHelp,
	}
	var aor string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the upstream registration records, of every AOR or of one",
		Long: `List the records of what sipwake does for each of its contacts at the PBX between the
devices' own REGISTERs: on-behalf refreshes (state active, backing_off or needs_login) or
refresh pushes only (push_only).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if aor != "" {
				q.Set("aor", aor)
			}
			return adminDo(cmd.Context(), a, http.MethodGet, "/v1/registrations", q, nil, func(out adminRegistrations) error {
				return printRegistrations(a.stdout, out.Registrations)
			})
		},
	}
	list.Flags().StringVar(&aor, "aor", "", "only this address of record")
	cmd.AddCommand(list)
	return cmd
}

func printRegistrations(w io.Writer, rs []adminRegistration) error {
	if len(rs) == 0 {
		_, err := fmt.Fprintln(w, "no registrations")
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "AOR\tINSTANCE\tTOKEN\tON-BEHALF\tSTATE\tFAILURES\tEXPIRES\tDEVICE-EXPIRES\tREFRESH-AT")
	for _, r := range rs {
		ob := "no"
		if r.OnBehalf {
			ob = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.AOR, dash(r.Instance), dash(r.Token), ob, dash(r.State),
			r.Failures, fmtTime(r.ExpiresAt), fmtTime(r.DeviceExpires), fmtTime(r.RefreshAt))
	}
	return tw.Flush()
}
