from chunkwise.cli import main; import sys; sys.exit(main())
