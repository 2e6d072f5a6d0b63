// Command lbctl is the operator CLI for lbd. It talks to the daemon's admin
// API over a unix socket. This is its skeleton: the global flags and exit
// codes of SPEC.md; the commands arrive with the admin API.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/lbd-lb/lbd/pkg/version"
)

func main() {
	socket := os.Getenv("LBCTL_SOCKET")
	if socket == "" {
		socket = "/run/lbd/admin.sock"
	}
	var output string
	root := &cobra.Command{
		Use:           "lbctl",
		Short:         "lbctl drives a running lbd through its admin socket",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&socket, "socket", socket, "admin socket of the daemon (env LBCTL_SOCKET)")
	root.PersistentFlags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print lbctl's version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintf(cmd.OutOrStdout(), "lbctl %s\n", version.Version)
		},
	})
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "lbctl:", err)
		os.Exit(2) // bad usage
	}
}
