"""Run the demo by hand: python -m tests.e2e.demo (then open http://127.0.0.1:3000)."""

from .stack import main

if __name__ == "__main__":
    main()
