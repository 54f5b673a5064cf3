//go:build ignore

// elfcheck fails unless every file named on the command line is a statically
// linked ELF executable: no PT_INTERP program header (no dynamic loader), no
// PT_DYNAMIC segment, no DT_NEEDED shared libraries and no imported symbols.
// image-check.sh runs it on the binary the Dockerfile builds, because the
// distroless static base image has no libc for a dynamic one to load.
//
//	go run deploy/docker/elfcheck.go ./sipwake
package main

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go run elfcheck.go BINARY...")
		os.Exit(2)
	}
	failed := false
	for _, name := range os.Args[1:] {
		if err := checkStatic(name); err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
			failed = true
			continue
		}
		fmt.Printf("%s: statically linked ELF executable\n", name)
	}
	if failed {
		os.Exit(1)
	}
}

func checkStatic(name string) error {
	f, err := elf.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("ELF type %v, want an executable", f.Type)
	}
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			return errors.New("has a PT_INTERP header: dynamically linked (needs a dynamic loader)")
		case elf.PT_DYNAMIC:
			return errors.New("has a PT_DYNAMIC segment: dynamically linked")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("reading DT_NEEDED: %w", err)
	}
	if len(libs) > 0 {
		return fmt.Errorf("needs shared libraries %v", libs)
	}
	syms, err := f.ImportedSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return fmt.Errorf("reading imported symbols: %w", err)
	}
	if len(syms) > 0 {
		return fmt.Errorf("imports %d dynamic symbols (first %s)", len(syms), syms[0].Name)
	}
	return nil
}
