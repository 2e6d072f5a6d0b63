package config

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem found in a config file. It prints as
// "FILE:LINE: message", or "FILE: message" when no line applies (a missing
// file, or a rule that concerns the whole file).
type Error struct {
	// File is the name the config was loaded under.
	File string
	// Line is the 1-based line of the offending key or table, or 0.
	Line int
	// Msg says what is wrong, without the file and line.
	Msg string

	// err is the underlying cause when there is one (for example an
	// *fs.PathError from Load), so that errors.Is sees through Error.
	err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Line > 0 {
		return e.File + ":" + strconv.Itoa(e.Line) + ": " + e.Msg
	}
	return e.File + ": " + e.Msg
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.err }

// ErrorList is every problem found in one config file, ordered by line. Load
// and Parse return a non-empty ErrorList as their error, never an empty one.
type ErrorList []*Error

// Error prints one problem per line.
func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap exposes each problem to errors.Is and errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}

// sortByLine orders problems by line, keeping the order in which they were
// found among problems on the same line. Problems without a line come first:
// they concern the whole file.
func (l ErrorList) sortByLine() {
	slices.SortStableFunc(l, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
}

// err returns l as an error, or nil when it is empty, so that callers never
// see a non-nil error interface holding an empty list.
func (l ErrorList) err() error {
	if len(l) == 0 {
		return nil
	}
	l.sortByLine()
	return l
}
