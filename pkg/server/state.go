package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/lbd-lb/lbd/pkg/pool"
)

// stateFile is the operator state kept in state_file: what lbctl set
// (drain, disable, weight), by pool and backend name, so that it survives
// a restart. Health is not kept: it is probed anew.
type stateFile struct {
	Version int                                `json:"version"`
	Pools   map[string]map[string]backendState `json:"pools"`
}

type backendState struct {
	State  string `json:"state,omitempty"`  // "draining" or "disabled"; absent when active
	Weight int    `json:"weight,omitempty"` // absent unless set at runtime
}

// loadState applies the state file, if one is configured and present, to
// the pools. Entries for pools or backends no longer configured are
// ignored.
func (s *Server) loadState() error {
	path := s.cfg.Global.StateFile
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	for pname, backends := range st.Pools {
		p := s.pools[pname]
		if p == nil {
			continue
		}
		for bname, bs := range backends {
			b := p.Backend(bname)
			if b == nil {
				continue
			}
			if bs.Weight > 0 {
				if err := p.SetWeight(b, bs.Weight); err != nil {
					s.log.Warn("state file weight ignored", "pool", pname, "backend", bname, "err", err)
				}
			}
			switch bs.State {
			case "draining":
				p.Drain(b)
			case "disabled":
				p.Disable(b)
			}
		}
	}
	s.log.Info("operator state restored", "file", path)
	return nil
}

// saveStateLocked writes the operator state atomically: a temp file in the
// same directory, synced, then renamed over the old one, so a crash leaves
// either the old state or the new, never half of one.
func (s *Server) saveStateLocked() error {
	path := s.cfg.Global.StateFile
	if path == "" {
		return nil
	}
	st := stateFile{Version: 1, Pools: map[string]map[string]backendState{}}
	for name, p := range s.pools {
		for _, b := range p.Backends() {
			var bs backendState
			if a := b.Admin(); a != pool.Active {
				bs.State = a.String()
			}
			if b.WeightSet() {
				bs.Weight = b.Weight()
			}
			if bs != (backendState{}) {
				if st.Pools[name] == nil {
					st.Pools[name] = map[string]backendState{}
				}
				st.Pools[name][b.Name] = bs
			}
		}
	}
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".lbd-state-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename this fails harmlessly
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
