package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallScript stages scripts/install.sh into a directory (DESTDIR),
// twice: the binaries, unit and example are (re)installed with their
// modes, the unit points at PREFIX, an operator's edited lbd.toml survives
// the second run, and the installed config passes lbd check.
func TestInstallScript(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	// A copy of the repository's layout, so that the script finds its
	// bin/ next to it without a make build of the real tree.
	root := t.TempDir()
	copyFile(t, "../../scripts/install.sh", filepath.Join(root, "scripts/install.sh"), 0o755)
	copyFile(t, "../../configs/lbd.example.toml", filepath.Join(root, "configs/lbd.example.toml"), 0o644)
	copyFile(t, "../../configs/systemd/lbd.service", filepath.Join(root, "configs/systemd/lbd.service"), 0o644)
	copyFile(t, lbdBinary(t), filepath.Join(root, "bin/lbd"), 0o755)
	copyFile(t, lbdBinary(t), filepath.Join(root, "bin/lbctl"), 0o755)

	stage := t.TempDir()
	run := func() string {
		t.Helper()
		cmd := exec.Command("bash", filepath.Join(root, "scripts/install.sh"))
		cmd.Env = append(os.Environ(), "DESTDIR="+stage, "PREFIX=/opt/lbd")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("install.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	if out := run(); !strings.Contains(out, "installed lbd into "+stage+"/opt/lbd/bin") {
		t.Errorf("output %q", out)
	}
	for path, mode := range map[string]os.FileMode{
		"opt/lbd/bin/lbd":                0o755,
		"opt/lbd/bin/lbctl":              0o755,
		"etc/systemd/system/lbd.service": 0o644,
		"etc/lbd/lbd.example.toml":       0o644,
		"etc/lbd/lbd.toml":               0o640,
	} {
		fi, err := os.Stat(filepath.Join(stage, path))
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), mode)
		}
	}
	unit, err := os.ReadFile(filepath.Join(stage, "etc/systemd/system/lbd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(unit), "ExecStart=/opt/lbd/bin/lbd ") || strings.Contains(string(unit), "/usr/local/bin") {
		t.Errorf("unit does not point at PREFIX:\n%s", unit)
	}
	if out, err := exec.Command(filepath.Join(stage, "opt/lbd/bin/lbd"), "check", "-c", filepath.Join(stage, "etc/lbd/lbd.toml")).CombinedOutput(); err != nil {
		t.Errorf("lbd check of the installed config: %v\n%s", err, out)
	}

	// The operator edits the config; a second run keeps it.
	cfg := filepath.Join(stage, "etc/lbd/lbd.toml")
	edited := []byte("# edited by the operator\n")
	if err := os.WriteFile(cfg, edited, 0o640); err != nil {
		t.Fatal(err)
	}
	run()
	if got, _ := os.ReadFile(cfg); string(got) != string(edited) {
		t.Errorf("second run overwrote lbd.toml: %q", got)
	}
	if _, err := os.Stat(filepath.Join(stage, "etc/systemd/system/lbd.service.tmp")); !os.IsNotExist(err) {
		t.Errorf("temporary unit left behind: %v", err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}
