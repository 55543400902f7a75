package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/zlmesh/zlmesh/internal/winsvc"
	"github.com/zlmesh/zlmesh/node"
)

// serviceStopTimeout bounds how long uninstall waits for the node to stop.
const serviceStopTimeout = 30 * time.Second

// runService is `zlmesh service install [up flags]` and `zlmesh service
// uninstall` (Windows): the service runs `zlmesh up` with those flags.
func runService(args []string) error {
	return serviceCommand(args, winsvc.SystemManager(), os.Executable)
}

// serviceCommand is runService with the manager and the executable's path
// given (tests pass fakes).
func serviceCommand(args []string, m winsvc.Manager, exe func() (string, error)) error {
	if len(args) == 0 {
		return errors.New("service: want install [up flags] or uninstall")
	}
	switch args[0] {
	case "install":
		// Check the flags now, not when the service starts.
		var cfg node.Config
		var o upOptions
		fs := newFlagSet("service install", "service install [up flags]")
		upFlags(fs, &cfg, &o)
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if err := noArgs(fs); err != nil {
			return err
		}
		path, err := exe()
		if err != nil {
			return fmt.Errorf("service install: path of zlmesh: %w", err)
		}
		if path, err = filepath.Abs(path); err != nil {
			return fmt.Errorf("service install: %w", err)
		}
		if err := winsvc.Install(m, winsvc.Name, winsvc.DefaultConfig(path, args[1:])); err != nil {
			return err
		}
		fmt.Printf("service %s installed: %s up %v (start it with `sc start %s`)\n", winsvc.Name, path, args[1:], winsvc.Name)
		return nil
	case "uninstall":
		if len(args) > 1 {
			return fmt.Errorf("service uninstall: unexpected arguments %q", args[1:])
		}
		if err := winsvc.Uninstall(m, winsvc.Name, serviceStopTimeout); err != nil {
			return err
		}
		fmt.Printf("service %s stopped and removed\n", winsvc.Name)
		return nil
	}
	return fmt.Errorf("service: unknown action %q: want install or uninstall", args[0])
}
