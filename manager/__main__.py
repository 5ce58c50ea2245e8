from manager.cli.main import main

main()
