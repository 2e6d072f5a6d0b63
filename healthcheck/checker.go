package healthcheck

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// Checker probes a set of targets and reports changes of their health.
//
// Scheduling: every target has one timer on the Clock; when it fires, the
// next one is armed Interval ±10% later and the probe starts on a goroutine
// of its own, which lives as long as the probe (at most Config.Timeout).
// Probe instants are rounded up to a grid of Interval/20 (at most 100 ms)
// on the clock's absolute time, within the ±10%: probes due close together
// start together, and the process wakes once per step of the grid rather
// than once per probe, which halves the cost of checking many targets.
// The period does not stretch with slow probes, so a failing target is down
// within Fall × Interval (+10%) + Timeout. A target has at most one probe
// in flight: one still running when the next falls due makes that next one
// be skipped. A hung target thus holds one goroutine and delays no other
// target.
//
// Events go to onChange in the order they happen, one at a time, from a
// goroutine of the Checker that holds no lock: onChange may call the
// Checker's methods, except Close. Neither PassiveDown nor Add waits for
// the delivery, so the data plane that calls PassiveDown never runs the
// owner's reaction (a balancer rebuild) itself. An event of a target that
// is removed meanwhile may still be delivered; the owner ignores IDs it
// does not know.
//
// The Checker logs nothing at info level: its owner logs the events with
// the context it has (the pool's name).
//
// All methods are safe for concurrent use.
type Checker struct {
	cfg      Config
	onChange func(Event)
	onProbe  func(id string, ok bool)
	clock    Clock
	prober   Prober
	log      *slog.Logger

	// ctx is canceled by Close, which aborts the probes in flight.
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts the probes in flight and the event deliverer. Add is only
	// called under mu while !closed, so Close's Wait sees them all.
	wg sync.WaitGroup

	mu         sync.Mutex
	targets    map[string]*target
	closed     bool
	queue      []Event // events not yet handed to onChange
	delivering bool    // a deliverer goroutine is draining queue
}

// target is one probed address. A Remove or re-Add makes a new target, so
// callbacks of a removed one see removed and do nothing.
type target struct {
	id   string
	addr netip.AddrPort // the probed address: Config.Port applied
	tr   tracker
	// timer is the next probe, or with TypeNone the end of a passive
	// hold-down; nil when nothing is pending.
	timer   Timer
	probing bool
	removed bool
}

// Option configures a Checker.
type Option func(*Checker)

// WithClock sets the Clock that schedules probes and passive hold-downs.
// Default: SystemClock. Tests pass a *FakeClock.
func WithClock(c Clock) Option { return func(k *Checker) { k.clock = c } }

// OnProbe sets a function called after every probe with its result, for
// lbd_health_checks_total. It runs on the probe's goroutine, without the
// Checker's lock, after the result has been applied (State reflects it),
// and must be quick. Results of probes aborted by Remove or Close are not
// reported. Default: none.
func OnProbe(f func(id string, ok bool)) Option { return func(k *Checker) { k.onProbe = f } }

// WithProber replaces the Prober built from Config.Type, to script health
// in tests. It has no effect with TypeNone, which never probes. Default:
// the tcp or http prober of the Config.
func WithProber(p Prober) Option { return func(k *Checker) { k.prober = p } }

// WithLogger sets the logger for debug messages (failed and skipped
// probes). Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(k *Checker) { k.log = l } }

// New returns a Checker with no targets. Zero fields of cfg get their
// defaults (see Config); a cfg that does not Validate yields a Checker
// whose probes all fail with the validation error, so that the mistake
// shows as a reason rather than a crash. onChange receives the events; it
// may be nil.
func New(cfg Config, onChange func(Event), opts ...Option) *Checker {
	c := &Checker{
		cfg:      cfg.withDefaults(),
		onChange: onChange,
		clock:    SystemClock{},
		log:      slog.Default(),
		targets:  make(map[string]*target),
	}
	for _, o := range opts {
		o(c)
	}
	if c.onChange == nil {
		c.onChange = func(Event) {}
	}
	if c.prober == nil {
		c.prober = newProber(c.cfg)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c
}

// Config returns the Checker's configuration, defaults applied. An owner
// compares it with a reloaded one to decide whether the Checker can stay.
func (c *Checker) Config() Config { return c.cfg }

// Add starts checking a target and returns its state, which is initial
// except for a new target with TypeNone, which is up at once without an
// Event.
//
// A new target (initial.Known false) is down and is probed at once; its
// first result sends an Event either way (see Event). A known one (a
// reload carrying its state over) keeps initial and is first probed after
// a jittered Interval; with TypeNone, a known down one stays down for a
// new Interval. Adding an ID that is present replaces it, as Remove then
// Add would. After Close, Add does nothing.
func (c *Checker) Add(id string, addr netip.AddrPort, initial State) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return initial
	}
	if old := c.targets[id]; old != nil {
		c.dropLocked(old)
	}
	if c.cfg.Port != 0 {
		addr = netip.AddrPortFrom(addr.Addr(), uint16(c.cfg.Port))
	}
	t := &target{id: id, addr: addr, tr: newTracker(c.cfg.Rise, c.cfg.Fall, initial)}
	c.targets[id] = t
	switch {
	case c.cfg.Type == TypeNone && initial.Known && !initial.Up:
		c.holdDownLocked(t)
	case c.cfg.Type == TypeNone:
		t.tr.setUp(true)
	case !initial.Known:
		c.armLocked(t)
		c.startProbeLocked(t)
	default:
		c.armLocked(t)
	}
	return t.tr.state()
}

// Remove stops checking a target. A probe of it in flight runs to its end
// but its result is dropped. Removing an unknown ID does nothing.
func (c *Checker) Remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.targets[id]; t != nil {
		delete(c.targets, id)
		c.dropLocked(t)
	}
}

// State returns a target's health; the zero State for an unknown ID. It
// stays readable after Close, so that a reload can carry states over from
// a closed Checker.
func (c *Checker) State(id string) State {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t := c.targets[id]; t != nil {
		return t.tr.state()
	}
	return State{}
}

// PassiveDown takes a target down at once, because the data plane saw its
// connects fail; reason (such as "5 consecutive connect failures") goes
// into the Event after "passive: ". The target then needs Rise consecutive
// successful probes to come back, counted from the next probe; with
// TypeNone it comes back after Interval. A target already down, or an
// unknown ID, is left as it is, except that a rise in progress starts over.
func (c *Checker) PassiveDown(id, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.targets[id]
	if t == nil || c.closed {
		return
	}
	if !t.tr.setUp(false) {
		return
	}
	c.emitLocked(Event{ID: id, Up: false, Reason: "passive: " + reason})
	if c.cfg.Type == TypeNone {
		c.holdDownLocked(t)
	}
}

// Close stops all probing, aborts the probes in flight and waits for them
// to end and for the pending events to be delivered. No callback runs
// after Close returns. It must not be called from onChange.
func (c *Checker) Close() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		for _, t := range c.targets {
			if t.timer != nil {
				t.timer.Stop()
				t.timer = nil
			}
		}
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Checker) dropLocked(t *target) {
	t.removed = true
	if t.timer != nil {
		t.timer.Stop()
		t.timer = nil
	}
}

// armLocked schedules t's next probe.
func (c *Checker) armLocked(t *target) {
	t.timer = c.clock.AfterFunc(nextDelay(c.clock.Now(), c.cfg.Interval), func() { c.due(t) })
}

// maxGrid bounds the grid on which probes start (see nextDelay).
const maxGrid = 100 * time.Millisecond

// nextDelay returns how long after now a target's next probe starts: a
// random delay within [0.9, 1.1] × interval, drawn afresh for every probe so
// that targets added together drift apart instead of being probed in
// lockstep, and rounded up to a grid of interval/20 (at most maxGrid) on
// the clock's absolute time, so that the probes that fall due within one
// step of the grid start together. Batching them thus costs one wake-up of
// the process per step instead of one per probe: at 1000 targets every 2s,
// 10 wake-ups a second instead of 500, which bench/healthcheck measured
// as more than half the cost of checking. The draw stops one step short
// of 1.1 × interval so that the rounding stays within the bound.
func nextDelay(now time.Time, interval time.Duration) time.Duration {
	grid := min(interval/20, maxGrid)
	lo, hi := interval-interval/10, interval+interval/10-grid
	due := now.Add(lo + time.Duration(rand.Int64N(int64(hi-lo)+1)))
	if grid > 0 {
		if rem := due.UnixNano() % int64(grid); rem > 0 {
			due = due.Add(grid - time.Duration(rem))
		} else if rem < 0 { // before 1970: only a test clock gets there
			due = due.Add(-time.Duration(rem))
		}
	}
	return due.Sub(now)
}

// due runs when t's timer fires.
func (c *Checker) due(t *target) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.removed || c.closed {
		return
	}
	// Arm first: the period is Interval whatever the probe takes.
	c.armLocked(t)
	c.startProbeLocked(t)
}

func (c *Checker) startProbeLocked(t *target) {
	if t.probing {
		c.log.Debug("health probe skipped: the previous one is still running", "backend", t.id, "address", t.addr)
		return
	}
	t.probing = true
	c.wg.Add(1)
	go c.probe(t)
}

// probe runs one probe of t and applies its result.
func (c *Checker) probe(t *target) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timeout)
	err := c.prober.Probe(ctx, t.addr)
	cancel()

	c.mu.Lock()
	t.probing = false
	if t.removed || c.closed {
		c.mu.Unlock()
		return
	}
	if changed, reason := t.tr.observe(err); changed {
		c.emitLocked(Event{ID: t.id, Up: t.tr.up, Reason: reason})
	}
	c.mu.Unlock()

	if err != nil {
		c.log.Debug("health probe failed", "backend", t.id, "address", t.addr, "err", err)
	}
	if c.onProbe != nil {
		c.onProbe(t.id, err == nil)
	}
}

// holdDownLocked schedules the end of a passive hold-down (TypeNone).
func (c *Checker) holdDownLocked(t *target) {
	if t.timer != nil {
		t.timer.Stop()
	}
	t.timer = c.clock.AfterFunc(c.cfg.Interval, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.removed || c.closed {
			return
		}
		t.timer = nil
		if t.tr.setUp(true) {
			c.emitLocked(Event{ID: t.id, Up: true,
				Reason: fmt.Sprintf("passive: hold-down of %v over (no active check)", c.cfg.Interval)})
		}
	})
}

// emitLocked queues ev and makes sure a deliverer runs. One deliverer at a
// time keeps the events in order without holding mu while onChange runs.
func (c *Checker) emitLocked(ev Event) {
	c.queue = append(c.queue, ev)
	if !c.delivering {
		c.delivering = true
		c.wg.Add(1)
		go c.deliver()
	}
}

func (c *Checker) deliver() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		q := c.queue
		c.queue = nil
		if len(q) == 0 {
			c.delivering = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		for _, ev := range q {
			c.onChange(ev)
		}
	}
}
