package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// Exit statuses (INTERFACE.md "Binary and CLI").
const (
	exitOK          = 0 // success
	exitConfig      = 1 // usage or configuration error
	exitUnavailable = 2 // a needed service cannot be reached
)

// exitError carries the exit status a command wants. A nil err means the command has
// already told the user what went wrong.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// unavailable marks err as "a needed service cannot be reached" (exit status 2). serve
// returns it when, for example, the store or the upstream cannot be reached at start.
func unavailable(err error) error {
	return &exitError{code: exitUnavailable, err: err}
}

// cli holds what every command shares: the injected environment and output streams.
type cli struct {
	env    []string
	stdout io.Writer
	stderr io.Writer

	configPath string // -c/--config
	output     string // -o/--output
}

// run executes the sipwake command line and returns the exit status.
func run(ctx context.Context, args, env []string, stdout, stderr io.Writer) int {
	root := newRootCmd(env, stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintf(stderr, "sipwake: %v\n", ee.err)
		}
		return ee.code
	}
	// Anything else is a usage error from cobra (unknown command or flag, wrong
	// arguments) or a plain error from a command.
	fmt.Fprintf(stderr, "sipwake: %v\n", err)
	if isUsageError(err) {
		fmt.Fprintln(stderr, "run 'sipwake --help' for usage")
	}
	return exitConfig
}

// usageError marks a command-line mistake.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func isUsageError(err error) bool {
	var ue *usageError
	return errors.As(err, &ue)
}

// noArgs is the Args check of every command: sipwake takes no positional arguments, so an
// argument is an unknown subcommand or a mistake.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.HasSubCommands() {
		return &usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
	}
	return &usageError{fmt.Errorf("%q takes no arguments, got %q", cmd.CommandPath(), args[0])}
}

// showHelp is the Run of a command that only groups subcommands.
func showHelp(cmd *cobra.Command, _ []string) error {
	return cmd.Help()
}

// newRootCmd builds the command tree. env replaces the process environment (SIPWAKE_CONFIG
// and every SIPWAKE_* override), so tests run the CLI in-process.
func newRootCmd(env []string, stdout, stderr io.Writer) *cobra.Command {
	c := &cli{env: env, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "sipwake",
		Short: "SIP edge proxy that wakes sleeping mobile apps with push notifications",
		Long: `sipwake stands between mobile softphones and a PBX. It keeps each app's push token,
keeps its registration at the PBX alive while the app sleeps, and wakes the app with a push
when a call or a message arrives for it.

Configuration: YAML from -c/--config (or SIPWAKE_CONFIG), overridden key by key by
SIPWAKE_* environment variables; "sipwake config default" prints every key.`,
		Args:          noArgs,
		RunE:          showHelp,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if c.output != "table" && c.output != "json" {
				return &usageError{fmt.Errorf("-o %q: want table or json", c.output)}
			}
			return nil
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.CompletionOptions.HiddenDefaultCmd = true
	root.PersistentFlags().StringVarP(&c.configPath, "config", "c", "", "config file (YAML); default $SIPWAKE_CONFIG, else built-in defaults")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")

	root.AddCommand(c.serveCmd(), c.validateCmd(), c.versionCmd(), c.configCmd())
	root.AddCommand(c.adminCmds()...) // bindings, push, calls, messages, log (admin_cmd.go); accounts, registrations (admin_accounts_cmd.go)
	return root
}

// getenv looks name up in the injected environment.
func (c *cli) getenv(name string) string {
	for _, kv := range c.env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v
		}
	}
	return ""
}

// path returns the config file to read: -c, else SIPWAKE_CONFIG, else none.
func (c *cli) path() string {
	if c.configPath != "" {
		return c.configPath
	}
	return c.getenv("SIPWAKE_CONFIG")
}

// load loads and validates the configuration. Problems come back as a list; any other
// failure (file missing, YAML syntax) as err.
func (c *cli) load() (*Config, []Problem, error) {
	cfg, err := LoadConfig(c.path(), c.env)
	if err != nil {
		var ce *ConfigError
		if errors.As(err, &ce) {
			return nil, ce.Problems, nil
		}
		return nil, nil, err
	}
	return cfg, cfg.Validate(), nil
}

// loadValid loads and validates, printing every problem to stderr; on any problem it
// returns an exitError with status 1.
func (c *cli) loadValid() (*Config, error) {
	cfg, problems, err := c.load()
	if err != nil {
		return nil, &exitError{code: exitConfig, err: err}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(c.stderr, p.String())
		}
		return nil, &exitError{code: exitConfig}
	}
	return cfg, nil
}

func (c *cli) serveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon in the foreground, logging to stdout",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.loadValid()
			if err != nil {
				return err
			}
			log, level, err := newLogger(cfg.Log, c.stdout)
			if err != nil {
				return &exitError{code: exitConfig, err: err}
			}
			defer func() { _ = log.Sync() }()
			if err := runServe(cmd.Context(), cfg, log, level); err != nil {
				var ee *exitError
				if errors.As(err, &ee) {
					return err
				}
				return &exitError{code: exitConfig, err: err}
			}
			return nil
		},
	}
}

// validateResult is `sipwake validate -o json` output.
type validateResult struct {
	OK       bool      `json:"ok"`
	Problems []Problem `json:"problems"`
}

func (c *cli) validateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "validate",
		Short: "Load and check the configuration without starting; print key.path: reason per problem",
		Long: `Load the configuration (file and SIPWAKE_* environment) and check it without starting
anything. Prints "config ok" and exits 0, or prints one "key.path: reason" line per problem
on stderr and exits 1. Files named by *_file keys must exist and be readable.`,
		Args: noArgs,
		RunE: func(*cobra.Command, []string) error {
			_, problems, err := c.load()
			if err != nil {
				problems = append(problems, Problem{Reason: err.Error()})
			}
			if c.output == "json" {
				res := validateResult{OK: len(problems) == 0, Problems: problems}
				if res.Problems == nil {
					res.Problems = []Problem{}
				}
				if err := writeJSON(c.stdout, res); err != nil {
					return err
				}
			} else if len(problems) == 0 {
				fmt.Fprintln(c.stdout, "config ok")
			} else {
				for _, p := range problems {
					fmt.Fprintln(c.stderr, p.String())
				}
			}
			if len(problems) > 0 {
				return &exitError{code: exitConfig}
			}
			return nil
		},
	}
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit, Go version and SIP library version",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			bi := currentBuildInfo()
			if c.output == "json" {
				return writeJSON(c.stdout, bi)
			}
			_, err := fmt.Fprintf(c.stdout, "version:     %s\ncommit:      %s\ngo:          %s\nsip library: %s\n",
				bi.Version, bi.Commit, bi.GoVersion, bi.SIPLibrary)
			return err
		},
	}
}

func (c *cli) configCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print configurations",
		Args:  noArgs,
		RunE:  showHelp,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "default",
		Short: "Print the complete default configuration as commented YAML",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			return c.writeConfig(defaultConfig(), defaultHeader)
		},
	}, &cobra.Command{
		Use:   "show",
		Short: "Print the effective configuration (file, environment and defaults merged) as YAML",
		Args:  noArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := LoadConfig(c.path(), c.env)
			if err != nil {
				var ce *ConfigError
				if errors.As(err, &ce) {
					for _, p := range ce.Problems {
						fmt.Fprintln(c.stderr, p.String())
					}
					return &exitError{code: exitConfig}
				}
				return &exitError{code: exitConfig, err: err}
			}
			return c.writeConfig(cfg, "# sipwake effective configuration (file, SIPWAKE_* environment and defaults merged).\n")
		},
	})
	return cmd
}

// writeConfig prints cfg as the commented YAML file, or with -o json as
// one JSON object with the same keys and values (durations as "30s").
func (c *cli) writeConfig(cfg *Config, header string) error {
	y := renderConfigYAML(cfg, header)
	if c.output != "json" {
		_, err := c.stdout.Write(y)
		return err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(y, &doc); err != nil {
		return fmt.Errorf("config as json: %w", err)
	}
	return writeJSON(c.stdout, doc)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
