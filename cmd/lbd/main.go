// Command lbd is the layer-4 load balancer daemon.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/lbd-lb/lbd/pkg/config"
	"github.com/lbd-lb/lbd/pkg/server"
	"github.com/lbd-lb/lbd/pkg/version"
)

// exitError carries an exit code out of a command.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	root := &cobra.Command{
		Use:           "lbd",
		Short:         "lbd is a TCP, UDP and HTTP load balancer",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(runCmd(), checkCmd(), demoCmd(), versionCmd())
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "lbd:", err)
		os.Exit(2)
	}
}

// signals delivers SIGTERM, SIGINT and SIGHUP.
func signals() <-chan os.Signal {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	return ch
}

func runCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "run --config FILE",
		Short:   "Run the load balancer in the foreground until SIGTERM or SIGINT; SIGHUP reloads the config",
		Example: "  lbd run -c /etc/lbd/lbd.toml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(file)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return exitError{1}
			}
			log, level := server.NewLogger(cfg.Global, os.Stderr)
			load := func() (*config.Config, error) { return config.Load(file) }
			if err := server.Run(cfg, server.Options{Logger: log, LogLevel: level, Load: load}, signals()); err != nil {
				log.Error("lbd failed", "err", err)
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (TOML)")
	cmd.MarkFlagRequired("config")
	return cmd
}

func checkCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:     "check --config FILE",
		Short:   "Validate a config file: print FILE: ok, or each problem as FILE:LINE: message",
		Example: "  lbd check -c /etc/lbd/lbd.toml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := config.Load(file); err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), err)
				return exitError{1}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", file)
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "config", "c", "", "config file (TOML)")
	cmd.MarkFlagRequired("config")
	return cmd
}

func demoCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "demo",
		Short:   "Run the embedded demo: three HTTP backends behind 127.0.0.1:8080 (wrr) and 127.0.0.1:8081 (maglev)",
		Example: "  lbd demo\n  curl http://127.0.0.1:8080/",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := server.Demo(os.Stdout, signals()); err != nil {
				fmt.Fprintln(os.Stderr, "lbd demo:", err)
				return exitError{1}
			}
			return nil
		},
	}
}

func versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "lbd %s\n", version.Version)
		},
	}
}
