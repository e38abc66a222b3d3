"""The SDK's machinery behind the public facade (private: no stable API here)."""
