package examples_test

import "os"

var interruptSignal = os.Interrupt
