package main

import "errors"

// runTestbed implements `zlmesh testbed ...`.
func runTestbed(args []string) error { return errors.New("testbed: not implemented yet") }
