from seg2med.cli import main

main()
