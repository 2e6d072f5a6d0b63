package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/lbd-lb/lbd/pkg/admin"
)

// newTable returns a writer that aligns tab-separated columns for a
// terminal; Flush writes them.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}

// writeJSON writes v as the API's JSON, indented for reading.
func writeJSON(w io.Writer, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding JSON: %w", err)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// formatTime writes t as the daemon sent it, to the second.
func formatTime(t time.Time) string { return t.Format(time.RFC3339) }

// writeBackends writes one row per backend, with a header even when there
// are none.
func writeBackends(w io.Writer, backends []admin.Backend) error {
	tw := newTable(w)
	fmt.Fprintln(tw, "POOL\tBACKEND\tADDRESS\tSTATE\tHEALTH\tWEIGHT\tACTIVE\tTOTAL")
	for _, b := range backends {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n",
			b.Pool, b.Name, b.Address, b.State, b.Health, b.Weight, b.ActiveConnections, b.TotalConnections)
	}
	return tw.Flush()
}

// statusIndent lines up the values of writeStatus's header block.
const statusIndent = "              "

// writeStatus writes the daemon's facts, then a table of its listeners.
func writeStatus(w io.Writer, s admin.Status) error {
	var sb strings.Builder
	field := func(name, value string) {
		sb.WriteString(name)
		sb.WriteString(statusIndent[len(name):])
		sb.WriteString(value)
		sb.WriteByte('\n')
	}
	field("version:", s.Version)
	field("uptime:", fmt.Sprintf("%s (since %s)", s.Uptime, formatTime(s.StartedAt)))
	field("config file:", s.ConfigFile)
	switch r := s.LastReload; {
	case r == nil:
		field("last reload:", "none since start")
	case r.OK:
		field("last reload:", "ok at "+formatTime(r.At))
	default:
		field("last reload:", "failed at "+formatTime(r.At))
		for line := range strings.Lines(r.Error) {
			sb.WriteString(statusIndent + "  " + strings.TrimRight(line, "\n") + "\n")
		}
	}
	sb.WriteByte('\n')
	if _, err := io.WriteString(w, sb.String()); err != nil {
		return err
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "NAME\tBIND\tPROTOCOL\tPOOL\tACTIVE\tTOTAL")
	for _, l := range s.Listeners {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\n", l.Name, l.Bind, l.Protocol, l.Pool, l.ActiveConnections, l.TotalConnections)
	}
	return tw.Flush()
}
