from dlf.cli import main

main()
