"""The local runner behind `meshctl up`: addresses, processes and their supervision."""
