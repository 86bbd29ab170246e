"""Device farms: inventories of adb servers and devices, one run per device, one farm result."""
