// R's own symbols that are not in its API headers, declared once here.
// Both are declared for front-ends and graphics devices (Rinterface.h,
// R_ext/GraphicsDevice.h), headers a package should not include whole.
#pragma once

extern "C" {
// R's flag for a pending user interrupt, acted on at R's next check: the
// worker sets it to stop the task of a cancelled call.
extern int R_interrupts_pending;
// Signals an interrupt as R does for Ctrl-C: calling handlers, then the
// jump to the nearest handler or the top level.
void Rf_onintr(void);
}
