package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/lbd-lb/lbd/pkg/admin"
	"github.com/lbd-lb/lbd/pkg/version"
)

// Exit codes of lbctl (docs/reference.md).
const (
	exitOK      = 0
	exitRefused = 1 // the daemon refused, or drain --wait timed out
	exitUsage   = 2 // bad usage, or the daemon cannot be reached
)

const defaultSocket = "/run/lbd/admin.sock"

// Bounds on one admin call, so that a hung daemon does not hang lbctl. A
// reload re-reads the config and may wait for first health probes.
const (
	callTimeout   = 30 * time.Second
	reloadTimeout = 2 * time.Minute
)

// env is what run takes from the process, so that tests can replace it.
type env struct {
	getenv func(string) string
	// isTerminal reports whether a writer is a terminal.
	isTerminal func(io.Writer) bool
	// pollInterval is how often drain --wait asks for the active count.
	pollInterval time.Duration
}

// usageError is a mistake in the command line; run exits 2 on it and
// points at the command's help.
type usageError struct {
	cmd *cobra.Command
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(cmd *cobra.Command, format string, args ...any) error {
	return &usageError{cmd: cmd, err: fmt.Errorf(format, args...)}
}

// errTimeout is wrapped by drain --wait's error when --timeout passes.
var errTimeout = errors.New("timed out")

// run executes lbctl with args and returns its exit code. Answers go to
// stdout; errors, as "lbctl: reason", to stderr.
func run(args []string, stdout, stderr io.Writer, e env) int {
	c := &cli{stdout: stdout, env: e}
	root := c.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(context.Background())
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "lbctl:", err)
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", ue.cmd.CommandPath())
	}
	return exitCode(err)
}

// exitCode maps a command's error to lbctl's exit code (docs/reference.md): the daemon's
// refusals and drain timeouts are 1; usage errors, an unreachable daemon
// and any other failure to get an answer are 2.
func exitCode(err error) int {
	if _, ok := errors.AsType[*admin.APIError](err); ok {
		return exitRefused
	}
	if errors.Is(err, errTimeout) || errors.Is(err, errStillActive) {
		return exitRefused
	}
	return exitUsage
}

// cli holds the state the commands share.
type cli struct {
	stdout io.Writer
	env    env
	socket string
	output string // "table" or "json"
}

func (c *cli) client() *admin.Client { return admin.NewClient(c.socket) }

func (c *cli) rootCommand() *cobra.Command {
	socket := c.env.getenv("LBCTL_SOCKET")
	if socket == "" {
		socket = defaultSocket
	}
	root := &cobra.Command{
		Use:   "lbctl",
		Short: "lbctl drives a running lbd through its admin socket",
		Long: `lbctl drives a running lbd through its admin socket.

Exit codes: 0 on success; 1 when lbd refused (unknown pool or backend,
rejected config, drain --wait timeout), with the reason on stderr; 2 on bad
usage or when lbd cannot be reached.`,
		Example: `  lbctl status
  lbctl backends web -o json
  LBCTL_SOCKET=/tmp/lbd/admin.sock lbctl drain web web-1 --wait`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if c.output != "table" && c.output != "json" {
				return usagef(cmd, "invalid output format %q: want table or json", c.output)
			}
			return nil
		},
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.PersistentFlags().StringVar(&c.socket, "socket", socket, "admin socket of lbd (env LBCTL_SOCKET)")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output format: table or json")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return &usageError{cmd: cmd, err: err}
	})
	root.AddCommand(
		c.statusCommand(),
		c.backendsCommand(),
		c.drainCommand(),
		c.stateCommand("enable", "Undo drain or disable: the backend takes new connections again",
			(*admin.Client).Enable),
		c.stateCommand("disable", "Maintenance: the backend takes no new connections, and open ones are closed",
			(*admin.Client).Disable),
		c.weightCommand(),
		c.reloadCommand(),
		c.versionCommand(),
	)
	root.InitDefaultHelpCmd()
	for _, cmd := range root.Commands() {
		if cmd.Name() == "help" {
			cmd.Example = "  lbctl help drain"
		}
	}
	return root
}

// args checks the number of positional arguments; names describes them
// for the error.
func args(minN, maxN int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < minN || len(args) > maxN {
			return usagef(cmd, "%s takes %s, got %d argument(s)", cmd.Name(), names, len(args))
		}
		return nil
	}
}

func (c *cli) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "status",
		Short:   "Show version, uptime, config file, last reload and listeners",
		Example: "  lbctl status\n  lbctl status -o json",
		Args:    args(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			st, err := c.client().Status(ctx)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return writeJSON(c.stdout, st)
			}
			return writeStatus(c.stdout, st)
		},
	}
}

func (c *cli) backendsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "backends [POOL]",
		Short: "List the backends of every pool, or of one",
		Long: `List the backends of every pool, or of POOL, one row each. STATE is the
operator's (active, draining, disabled), HEALTH the health checks' (up, down).`,
		Example: "  lbctl backends\n  lbctl backends web\n  lbctl backends -o json",
		Args:    args(0, 1, "at most one argument, POOL"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			if len(argv) == 1 {
				p, err := c.client().Pool(ctx, argv[0])
				if err != nil {
					return err
				}
				if c.output == "json" {
					return writeJSON(c.stdout, p)
				}
				return writeBackends(c.stdout, p.Backends)
			}
			pools, err := c.client().Pools(ctx)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return writeJSON(c.stdout, pools)
			}
			var all []admin.Backend
			for _, p := range pools {
				all = append(all, p.Backends...)
			}
			return writeBackends(c.stdout, all)
		},
	}
}

func (c *cli) drainCommand() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain POOL BACKEND",
		Short: "Send a backend no new connections; open ones continue",
		Long: `Send a backend no new connections or UDP flows; open ones continue.

With --wait, return once its active connections reach 0, showing the count
while waiting when stdout is a terminal. With --timeout too, exit 1 if the
time passes first; without it, or with 0, wait as long as it takes. A
backend enabled again while waiting also ends the wait with exit 1.`,
		Example: `  lbctl drain web web-1
  lbctl drain web 10.0.1.3:8080 --wait --timeout 5m`,
		Args: args(2, 2, "POOL and BACKEND"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			if timeout < 0 {
				return usagef(cmd, "--timeout must not be negative")
			}
			if cmd.Flags().Changed("timeout") && !wait {
				return usagef(cmd, "--timeout needs --wait")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			b, err := c.client().Drain(ctx, argv[0], argv[1])
			cancel()
			if err != nil {
				return err
			}
			if wait {
				if b, err = c.waitDrained(cmd.Context(), b, timeout); err != nil {
					return err
				}
			}
			return c.writeBackend(b)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backend has no active connections")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait, give up and exit 1 after this long (0: no limit)")
	return cmd
}

// stateCommand builds enable and disable, which differ only in the call.
func (c *cli) stateCommand(name, short string, call func(*admin.Client, context.Context, string, string) (admin.Backend, error)) *cobra.Command {
	return &cobra.Command{
		Use:     name + " POOL BACKEND",
		Short:   short,
		Example: fmt.Sprintf("  lbctl %s web web-1\n  lbctl %s web 10.0.1.3:8080", name, name),
		Args:    args(2, 2, "POOL and BACKEND"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			b, err := call(c.client(), ctx, argv[0], argv[1])
			if err != nil {
				return err
			}
			return c.writeBackend(b)
		},
	}
}

func (c *cli) weightCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "weight POOL BACKEND N",
		Short: "Set a backend's weight at runtime",
		Long: `Set a backend's weight at runtime, until the next weight command: it
survives reloads, and restarts when lbd has a state_file.`,
		Example: "  lbctl weight web web-1 200",
		Args:    args(3, 3, "POOL, BACKEND and N"),
		RunE: func(cmd *cobra.Command, argv []string) error {
			n, err := strconv.Atoi(argv[2])
			if err != nil {
				return usagef(cmd, "weight %q is not an integer", argv[2])
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), callTimeout)
			defer cancel()
			b, err := c.client().SetWeight(ctx, argv[0], argv[1], n)
			if err != nil {
				return err
			}
			return c.writeBackend(b)
		},
	}
}

func (c *cli) reloadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "reload",
		Short: "Reload lbd's config file, as SIGHUP does",
		Long: `Reload lbd's config file, as SIGHUP does. A rejected config changes
nothing: lbctl prints the problems on stderr and exits 1.`,
		Example: "  lbctl reload",
		Args:    args(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), reloadTimeout)
			defer cancel()
			r, err := c.client().Reload(ctx)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return writeJSON(c.stdout, r)
			}
			_, err = fmt.Fprintf(c.stdout, "reload ok at %s\n", formatTime(r.At))
			return err
		},
	}
}

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print lbctl's version",
		Example: "  lbctl version",
		Args:    args(0, 0, "no arguments"),
		RunE: func(*cobra.Command, []string) error {
			if c.output == "json" {
				return writeJSON(c.stdout, struct {
					Version string `json:"version"`
				}{version.Version})
			}
			_, err := fmt.Fprintf(c.stdout, "lbctl %s\n", version.Version)
			return err
		},
	}
}

func (c *cli) writeBackend(b admin.Backend) error {
	if c.output == "json" {
		return writeJSON(c.stdout, b)
	}
	return writeBackends(c.stdout, []admin.Backend{b})
}
